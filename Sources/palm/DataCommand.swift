// palm data: get training data.
import ArgumentParser
import Foundation
import PalmTrain

struct DataCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "data", abstract: "Get and inspect training data.",
    subcommands: [Fetch.self])

  struct Fetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Download a public data set into the cache and verify its SHA-256.",
      discussion: """
        Known data sets: \(KnownDataset.all.map { "\($0.name) (\($0.bytes) bytes)" }.joined(separator: ", ")).
        Prints the path of the verified file; train on it with `palm train --data PATH`.
        Any other text or binary file works with --data too (palm reads bytes).
        """)

    @Argument(help: "Data set name, e.g. tinyshakespeare.")
    var name: String

    @Option(help: "Cache directory (default: $PALM_CACHE or ~/.cache/palm).")
    var cacheDir: String?

    @Option(help: "Download from this URL instead (a mirror); the SHA-256 is still checked.")
    var url: String?

    func run() async throws {
      guard let ds = KnownDataset.named(name) else {
        throw ValidationError(DataFetchError.unknownDataset(name).description)
      }
      let dir = cacheDir.map { URL(fileURLWithPath: $0) } ?? DataFetch.defaultCacheDirectory
      FileHandle.standardError.write("fetching \(ds.name) into \(dir.path) ...\n".data(using: .utf8)!)
      do {
        let path = try await DataFetch.fetch(ds, into: dir, from: url)
        print(path.path)
      } catch let e as DataFetchError {
        throw CLIError(e.description)
      }
    }
  }
}

/// A one-line error for the user: printed as "Error: <message>" with exit code 1.
struct CLIError: Error, CustomStringConvertible {
  let description: String
  init(_ message: String) { description = message }
}
