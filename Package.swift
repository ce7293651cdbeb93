// swift-tools-version:6.1
// palm: PaLM-style language-model training on CPUs, on C kernels of its own.
// Layout and dependencies are described in docs/ARCHITECTURE.md.
import PackageDescription

// The C kernels are compiled for a portable x86-64 baseline; AVX2+FMA and AVX-512 code paths are
// marked with __attribute__((target(...))) and chosen at run time (pk_isa_active in CKernels/core.c), so the
// binary never depends on the CPU it was built on. OpenMP comes from Debian's libomp-dev (LLVM 14):
// clang's -fopenmp emits the calls, and we link libomp5 ourselves because swiftc does not.
#if arch(x86_64)
let kernelFlags = ["-O3", "-fopenmp", "-ffp-contract=fast", "-fno-math-errno"]
#else
let kernelFlags = ["-O3", "-fopenmp", "-fno-math-errno"]
#endif

let package = Package(
  name: "palm",
  products: [
    .executable(name: "palm", targets: ["palm"]),
    .library(name: "PalmModel", targets: ["PalmModel"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
  ],
  targets: [
    // MARK: - C kernels
    .target(
      name: "CKernels", path: "CKernels",
      cSettings: [.unsafeFlags(kernelFlags)],
      linkerSettings: [.linkedLibrary("omp5"), .linkedLibrary("m")]),

    .systemLibrary(
      name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
      providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),

    // SentencePiece (Debian's libsentencepiece-dev has a C++ API only) behind a small C header.
    .target(
      name: "CSentencePiece", path: "Sources/CSentencePiece",
      linkerSettings: [.linkedLibrary("sentencepiece"), .linkedLibrary("sentencepiece_train"), .linkedLibrary("stdc++")]),

    // MARK: - Swift modules (each may import only those listed before it)
    .target(name: "PalmTensor", dependencies: ["CKernels"]),
    .target(name: "PalmModel", dependencies: ["PalmTensor", "CKernels"]),
    .target(name: "PalmTrain", dependencies: ["PalmModel", "PalmTensor", "CKernels", "CSentencePiece"]),
    .target(name: "PalmParallel", dependencies: ["PalmTrain", "PalmModel", "PalmTensor", "CKernels", "CMPI"]),
    // Hardware/*.json: the devices `palm plan` knows (TPU v4, TPU v3, A100), every number with its source.
    .target(name: "PalmBench", dependencies: ["PalmParallel", "PalmTrain", "PalmModel", "PalmTensor", "CKernels"],
            resources: [.copy("Hardware")]),
    .executableTarget(
      name: "palm",
      dependencies: [
        "PalmBench", "PalmParallel", "PalmTrain", "PalmModel", "PalmTensor",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    .executableTarget(name: "palm-mpi-check", dependencies: ["PalmParallel", "PalmTrain", "PalmModel", "PalmTensor"], path: "Tests/MPICheck"),

    // MARK: - Tests
    .target(name: "_PalmTestSupport", dependencies: ["PalmBench", "PalmModel", "PalmTensor", "CKernels"]),
    .testTarget(name: "CKernelsTests", dependencies: ["CKernels", "PalmTensor", "_PalmTestSupport"]),
    .testTarget(name: "PalmTensorTests", dependencies: ["PalmTensor", "_PalmTestSupport"]),
    .testTarget(name: "PalmModelTests", dependencies: ["PalmModel", "PalmTensor", "CKernels", "_PalmTestSupport"]),
    .testTarget(name: "PalmTrainTests", dependencies: ["PalmTrain", "PalmModel", "PalmTensor", "_PalmTestSupport"]),
    .testTarget(name: "PalmParallelTests", dependencies: ["PalmParallel", "PalmBench", "PalmTrain", "PalmModel", "PalmTensor", "_PalmTestSupport"]),
    .testTarget(name: "PalmBenchTests", dependencies: ["PalmBench", "PalmModel", "PalmTensor", "_PalmTestSupport"]),
    // Runs the built palm executable on hostile input (needs the product built: swift build --build-tests).
    .testTarget(name: "PalmCLITests", dependencies: ["PalmTrain", "PalmModel", "PalmTensor", "_PalmTestSupport"]),
  ],
  cxxLanguageStandard: .cxx17
)
