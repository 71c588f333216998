import Foundation
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// Seeded mutation fuzzing of the parser: mutated copies of a valid file give
/// a GGUFError or a file whose every tensor lies inside it, never a crash.
@Suite(.ownThread) struct GGUFFuzzTests {
    static let iterations = 20_000

    /// Offsets of the integer fields in the sample (counts, lengths, types,
    /// dimensions, offsets): the fuzzer overwrites these with extremes.
    static func fieldOffsets(_ writer: GGUFTestWriter, _ layout: GGUFTestWriter.Layout) -> [Int] {
        var offsets = [4, 8, 16]
        for ((key, value), start) in zip(writer.metadata, layout.entryStarts) {
            let typeOffset = start + 8 + key.utf8.count
            offsets += [start, typeOffset, typeOffset + 4]
            if case .array = value { offsets.append(typeOffset + 8) }  // array count
        }
        for (tensor, start) in zip(writer.tensors, layout.tensorInfoStarts) {
            let dims = start + 8 + tensor.name.utf8.count
            offsets += [start, dims]
            offsets += (0..<tensor.dimensions.count).map { dims + 4 + 8 * $0 }
            let typeOffset = dims + 4 + 8 * tensor.dimensions.count
            offsets += [typeOffset, typeOffset + 4]
        }
        return offsets
    }

    struct Mutator {
        var random: SplitMix64
        let fieldOffsets: [Int]

        mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(random.next() % UInt64(n)) }

        mutating func extreme(fileSize: Int) -> UInt64 {
            let choices: [UInt64] = [
                0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 31, 32, 33, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000,
                0xFFFF_FFFF, 1 << 32, 1 << 40, UInt64(Int64.max), 1 << 63, .max, .max - 1, UInt64(fileSize),
                UInt64(fileSize) &- 1, UInt64(fileSize) + 1, UInt64(fileSize) * 2,
            ]
            return below(4) == 0 ? random.next() % 512 : choices[below(choices.count)]
        }

        mutating func mutate(_ original: [UInt8]) -> [UInt8] {
            var bytes = original
            for _ in 0...below(3) {
                guard !bytes.isEmpty else { break }
                switch below(7) {
                case 0:  // random bytes
                    for _ in 0...below(8) { bytes[below(bytes.count)] = UInt8(truncatingIfNeeded: random.next()) }
                case 1:  // bit flips
                    for _ in 0...below(8) { bytes[below(bytes.count)] ^= 1 << UInt8(below(8)) }
                case 2:  // truncation
                    bytes.removeLast(below(bytes.count) + 1)
                case 3:  // splice: copy a chunk over another place
                    let length = below(64) + 1
                    let from = below(bytes.count), to = below(bytes.count)
                    let chunk = Array(bytes[from..<min(bytes.count, from + length)])
                    for (i, b) in chunk.enumerated() where to + i < bytes.count { bytes[to + i] = b }
                case 4:  // splice: insert or delete a chunk
                    let at = below(bytes.count)
                    let length = below(48) + 1
                    if below(2) == 0 {
                        bytes.removeSubrange(at..<min(bytes.count, at + length))
                    } else {
                        let from = below(bytes.count)
                        bytes.insert(contentsOf: bytes[from..<min(bytes.count, from + length)], at: at)
                    }
                default:  // an integer field (usually a known one) overwritten with an extreme
                    let offset = below(3) == 0 ? below(bytes.count) : fieldOffsets[below(fieldOffsets.count)]
                    let value = extreme(fileSize: bytes.count)
                    let width = below(2) == 0 ? 4 : 8
                    for i in 0..<width where offset + i < bytes.count {
                        bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
                    }
                }
            }
            return bytes
        }
    }

    @Test func mutatedFilesGiveErrorsNotCrashes() throws {
        var writer = GGUFTestWriter.sample()
        writer.metadata.append(("general.alignment", .uint32(32)))
        let (original, layout) = writer.build()
        _ = try GGUFFile(bytes: original)

        var mutator = Mutator(random: SplitMix64(seed: 0x5EED_6675), fieldOffsets: Self.fieldOffsets(writer, layout))
        var parsed = 0
        var kinds: [String: Int] = [:]
        var scratch = [Float](repeating: 0, count: 1 << 16)
        let clock = ContinuousClock()
        let start = clock.now
        for iteration in 0..<Self.iterations {
            let bytes = mutator.mutate(original)
            do {
                let file = try GGUFFile(bytes: bytes)
                parsed += 1
                try Self.checkInvariants(file, iteration: iteration, scratch: &scratch)
            } catch let error as GGUFError {
                kinds["\(error.kind)", default: 0] += 1
            }
        }
        let elapsed = clock.now - start
        print("GGUF fuzz: \(Self.iterations) mutated files in \(elapsed): \(parsed) parsed, errors by kind: \(kinds.sorted { $0.key < $1.key })")
        // The mutations reach deep into the format, not just the magic.
        #expect(parsed > Self.iterations / 50)
        #expect(kinds.count >= 12, "\(kinds)")
    }

    /// What a successfully parsed file promises, exercised fully.
    static func checkInvariants(_ file: GGUFFile, iteration: Int, scratch: inout [Float]) throws {
        #expect(file.dataOffset % file.alignment == 0)
        for tensor in file.tensors {
            #expect(tensor.dimensions.count <= 4)
            #expect(tensor.elementCount == tensor.dimensions.reduce(1, *))
            #expect(tensor.byteCount == tensor.type.byteCount(elements: tensor.elementCount))
            #expect(tensor.fileOffset >= file.dataOffset && tensor.fileOffset + tensor.byteCount <= file.fileSize, "iteration \(iteration)")
            #expect(file.tensor(named: tensor.name)?.fileOffset == tensor.fileOffset)
            if tensor.type.isSupported && tensor.elementCount <= scratch.count && tensor.rowLength > 0 {
                scratch.withUnsafeMutableBufferPointer { out in
                    for row in 0..<tensor.rowCount {
                        dequantizeRow(of: tensor, row: row, into: out.baseAddress!)
                    }
                }
            }
        }
        for entry in file.metadataEntries {
            _ = try? file.int(entry.key)
            _ = try? file.float(entry.key)
            _ = try? file.string(entry.key)
            _ = try? file.intArray(entry.key)
            _ = try? file.floatArray(entry.key)
            _ = try? file.stringArray(entry.key)
        }
    }
}
