// TestData: where the tests find the shared corpus (never copied into the repository).
import Foundation

public enum TestData {
  /// Whether `python3` can import numpy and safetensors (installed by .ci/setup): the Python
  /// interop test runs only then, and is reported as skipped otherwise.
  public static let pythonHasSafetensors: Bool = {
    var pid = pid_t()
    let argv = ["/usr/bin/env", "python3", "-c", "import numpy, safetensors"]
    var cargs = argv.map { strdup($0) } + [nil]
    defer { for a in cargs { free(a) } }
    guard posix_spawn(&pid, "/usr/bin/env", nil, nil, &cargs, environ) == 0 else { return false }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return status == 0
  }()

  /// The path of tinyshakespeare.txt: $PALM_TEST_CORPUS, else ../shared/data beside the checkout.
  public static var tinyShakespeare: String? {
    if let p = ProcessInfo.processInfo.environment["PALM_TEST_CORPUS"], !p.isEmpty { return p }
    // #filePath = <repo>/Sources/_PalmTestSupport/TestData.swift
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
    let candidate = repo.deletingLastPathComponent().appendingPathComponent("shared/data/tinyshakespeare.txt")
    return FileManager.default.fileExists(atPath: candidate.path) ? candidate.path : nil
  }

  /// The repository root (for tests that run scripts or built products).
  public static var repositoryRoot: URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
  }
}
