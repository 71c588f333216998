import ArgumentParser
import Foundation
import SluiceEngine

extension MatmulPrecision: ExpressibleByArgument {}

/// Appends one JSON record (a line ending in a newline) to `path`, creating the file if needed.
func appendJSONRecord(_ record: String, to path: String) throws {
    if let handle = FileHandle(forWritingAtPath: path) {
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data(record.utf8))
    } else {
        try record.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
