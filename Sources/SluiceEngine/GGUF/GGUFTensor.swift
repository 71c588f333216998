/// One tensor of a GGUF file: its description and where its bytes are.
///
/// `data` points into the `GGUFFile`'s mapping and is valid only while that
/// file object is alive; keep the file referenced while you use it.
public struct GGUFTensor: @unchecked Sendable {
    public let name: String
    /// GGUF order: `dimensions[0]` is the row length (fastest-varying).
    public let dimensions: [Int]
    public let type: TensorType
    public let elementCount: Int
    /// Bytes of data in the file.
    public let byteCount: Int
    /// Absolute offset of the data in the file.
    public let fileOffset: Int
    /// The data, read-only.
    public let data: UnsafeRawPointer

    /// Elements per row (`dimensions[0]`, or 1 for a scalar).
    public var rowLength: Int { dimensions.first ?? 1 }
    /// Number of rows (product of the other dimensions).
    public var rowCount: Int { rowLength == 0 ? 0 : elementCount / rowLength }
    /// Bytes per row (rows are whole blocks).
    public var bytesPerRow: Int { rowLength / type.blockSize * type.bytesPerBlock }

    /// Pointer to the start of row `row`.
    public func row(_ row: Int) -> UnsafeRawPointer {
        precondition(row >= 0 && row < rowCount, "row \(row) out of range 0..<\(rowCount) in tensor '\(name)'")
        return data + row * bytesPerRow
    }
}
