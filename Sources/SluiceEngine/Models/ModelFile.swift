/// Typed access to the tensors and hyperparameters an architecture needs, with
/// errors that name the key or tensor and what was wrong with it.
extension GGUFFile {
    func requireString(_ key: String) throws -> String {
        guard let value = metadata[key] else { throw ModelLoadError("the model file has no '\(key)'") }
        guard case let .string(s) = value else { throw ModelLoadError("'\(key)' is \(value.typeDescription), expected a string") }
        return s
    }

    func requireInt(_ key: String) throws -> Int {
        guard let value = metadata[key] else { throw ModelLoadError("the model file has no '\(key)'") }
        guard let n = value.integerValue, n >= 0 else { throw ModelLoadError("'\(key)' is \(value.typeDescription), expected a non-negative integer") }
        return n
    }

    func optionalInt(_ key: String) throws -> Int? {
        guard metadata[key] != nil else { return nil }
        return try requireInt(key)
    }

    func optionalDouble(_ key: String) throws -> Double? {
        guard let value = metadata[key] else { return nil }
        switch value {
        case let .float32(f): return Double(f)
        case let .float64(f): return f
        default:
            if let n = value.integerValue { return Double(n) }
            throw ModelLoadError("'\(key)' is \(value.typeDescription), expected a number")
        }
    }

    func requireDouble(_ key: String) throws -> Double {
        guard let d = try optionalDouble(key) else { throw ModelLoadError("the model file has no '\(key)'") }
        return d
    }

    /// A 2-D weight tensor with `columns` inputs and `rows` outputs (GGUF dims `[columns, rows]`).
    func matrix(_ name: String, columns: Int, rows: Int, precision: MatmulPrecision = .float32) throws -> WeightMatrix {
        guard let tensor = tensor(named: name) else { throw ModelLoadError("the model file has no tensor '\(name)'") }
        guard tensor.dimensions == [columns, rows] else {
            throw ModelLoadError("tensor '\(name)' has shape \(tensor.dimensions), expected [\(columns), \(rows)]")
        }
        guard tensor.type.isSupported else {
            throw ModelLoadError("tensor '\(name)' has type \(tensor.type), which Sluice does not support")
        }
        // A mapped file's pages of repacked weights can be given back; owned images must keep theirs.
        return WeightMatrix(name: name, type: tensor.type, rows: rows, columns: columns, data: tensor.data,
                            precision: precision, releasingSource: path != nil)
    }

    func optionalMatrix(_ name: String, columns: Int, rows: Int, precision: MatmulPrecision = .float32) throws -> WeightMatrix? {
        guard tensor(named: name) != nil else { return nil }
        return try matrix(name, columns: columns, rows: rows, precision: precision)
    }

    /// A 1-D tensor of `count` elements, dequantized to floats.
    func vector(_ name: String, count: Int) throws -> [Float] {
        guard let tensor = tensor(named: name) else { throw ModelLoadError("the model file has no tensor '\(name)'") }
        guard tensor.dimensions == [count] else {
            throw ModelLoadError("tensor '\(name)' has shape \(tensor.dimensions), expected [\(count)]")
        }
        guard tensor.type.isSupported, count % tensor.type.blockSize == 0 else {
            throw ModelLoadError("tensor '\(name)' has type \(tensor.type), which Sluice does not support for vectors")
        }
        var values = [Float](repeating: 0, count: count)
        values.withUnsafeMutableBufferPointer { dequantizeRow(tensor.type, tensor.data, count: count, into: $0.baseAddress!) }
        return values
    }

    func optionalVector(_ name: String, count: Int) throws -> [Float]? {
        guard tensor(named: name) != nil else { return nil }
        return try vector(name, count: count)
    }
}
