/// Why a GGUF file (or a metadata lookup in one) was rejected.
///
/// `description` names the problem and where it is: a byte offset, a metadata
/// key or a tensor name. `kind` lets callers and tests tell cases apart.
public struct GGUFError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The file could not be opened, inspected or mapped.
        case io
        /// The first four bytes are not `GGUF`.
        case badMagic
        /// A GGUF version other than 2 or 3, or a big-endian file.
        case unsupportedVersion
        /// The file ends before a field that must be there.
        case truncated
        /// A count or length is larger than the rest of the file could hold.
        case countTooLarge
        /// A metadata value type id that GGUF does not define.
        case invalidValueType
        /// Arrays nested deeper than `GGUFLimits.maxArrayNesting`.
        case nestingTooDeep
        /// A key or tensor name that is not valid UTF-8.
        case invalidUTF8
        /// A bool value that is neither 0 nor 1.
        case invalidBool
        /// The same metadata key appears twice.
        case duplicateKey
        /// `general.alignment` is not a sane power of two.
        case badAlignment
        /// A tensor's dimensions, element count or size are invalid or overflow.
        case badTensorShape
        /// A tensor type id that GGML does not define.
        case unknownTensorType
        /// A tensor type that exists but Sluice cannot compute with.
        case unsupportedTensorType
        /// A tensor's data offset is not a multiple of the alignment.
        case misalignedTensor
        /// A tensor's data lies (partly) outside the file.
        case dataOutOfBounds
        /// Two tensors' data ranges overlap.
        case overlappingTensors
        /// Two tensors have the same name.
        case duplicateTensor
        /// A required metadata key or tensor is absent.
        case missing
        /// A metadata value has another type than the one asked for.
        case typeMismatch
        /// A metadata value does not fit the type asked for.
        case valueOutOfRange
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
