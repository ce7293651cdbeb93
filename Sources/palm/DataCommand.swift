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

    @Option(help: "Largest download accepted, in bytes (default 1 GiB; the data set's own size caps it too): a larger body stops the download and nothing is saved.")
    var maxBytes: Int = DataFetch.defaultMaxBytes

    func validate() throws {
      if maxBytes < 1 { throw ValidationError("--max-bytes must be at least 1 (got \(maxBytes))") }
    }

    func run() async throws {
      guard let ds = KnownDataset.named(name) else {
        throw ValidationError(DataFetchError.unknownDataset(name).description)
      }
      let dir = cacheDir.map { URL(fileURLWithPath: $0) } ?? DataFetch.defaultCacheDirectory
      FileHandle.standardError.write("fetching \(ds.name) into \(dir.path) ...\n".data(using: .utf8)!)
      // SIGINT / SIGTERM during the download: remove the temporary file, exit 130 / 143.
      let temporary = Locked<String?>(nil)
      var sources: [any DispatchSourceSignal] = []
      for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler {
          if let t = temporary.withLock({ $0 }) { unlink(t) }
          FileHandle.standardError.write(Data("palm data fetch: \(Preemption.name(sig)): stopped; nothing was saved\n".utf8))
          _exit(128 + sig)
        }
        source.resume()
        sources.append(source)
      }
      defer { sources.forEach { $0.cancel() } }
      do {
        let path = try await DataFetch.fetch(ds, into: dir, from: url, maxBytes: maxBytes) { t in
          temporary.withLock { $0 = t }
        }
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
