// Times n2p2's libnnp on one structure: energy and forces of ONE model, as LAMMPS or nnp-predict
// would compute them (neighbour list, symmetry-function groups, atomic networks, forces).
//
// Written for lasp2_hpc's benchmarks against n2p2's public API (nnp::Mode, nnp::Structure);
// compiled on demand by benchmarks/hdnnp_compare.py against an n2p2 build:
//
//   g++ -O3 -std=c++11 n2p2_driver.cpp -I N2P2/include -L N2P2/lib -lnnp -o n2p2_driver
//
// Usage: n2p2_driver MODEL_DIR INPUT_DATA REPEATS
// Prints one line: energy (file units, with atom_energy offsets) and the median, minimum and
// maximum wall time of one evaluation in milliseconds.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "Mode.h"
#include "Structure.h"

int main(int argc, char** argv)
{
    if (argc != 4)
    {
        std::fprintf(stderr, "usage: %s MODEL_DIR INPUT_DATA REPEATS\n", argv[0]);
        return 2;
    }
    std::string const directory = argv[1];
    std::string const structureFile = argv[2];
    int const repeats = std::atoi(argv[3]);

    nnp::Mode mode;
    mode.log.writeToStdout = false;
    mode.initialize();
    mode.loadSettingsFile(directory + "/input.nn");
    mode.setupGeneric();
    mode.setupSymmetryFunctionScaling(directory + "/scaling.data");
    std::map<std::string, std::string> formats;
    formats["short"] = directory + "/weights.%03zu.data";
    mode.setupNeuralNetworkWeights(formats);
    mode.setupSymmetryFunctionStatistics(false, false, false, false);

    nnp::Structure pristine;
    pristine.setElementMap(mode.elementMap);
    pristine.readFromFile(structureFile);
    if (mode.useNormalization())
    {
        pristine.toNormalizedUnits(mode.getMeanEnergy(), mode.getConvEnergy(),
                                   mode.getConvLength(), mode.getConvCharge());
    }

    std::vector<double> times;
    double energy = 0.0;
    for (int r = 0; r < repeats + 1; ++r)
    {
        nnp::Structure structure = pristine;  // as a new MD step: no neighbour list yet
        auto const start = std::chrono::steady_clock::now();
        mode.evaluateNNP(structure);
        auto const stop = std::chrono::steady_clock::now();
        if (r > 0)  // the first call warms caches and allocations
        {
            times.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
        }
        if (mode.useNormalization())
        {
            structure.toPhysicalUnits(mode.getMeanEnergy(), mode.getConvEnergy(),
                                      mode.getConvLength(), mode.getConvCharge());
        }
        mode.addEnergyOffset(structure, false);
        energy = structure.energy;
    }
    std::sort(times.begin(), times.end());
    std::printf("energy %.12f median_ms %.4f min_ms %.4f max_ms %.4f\n", energy,
                times[times.size() / 2], times.front(), times.back());
    return 0;
}
