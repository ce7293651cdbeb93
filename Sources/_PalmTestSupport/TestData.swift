// TestData: where the tests find the shared corpus (never copied into the repository).
import Foundation

public enum TestData {
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
