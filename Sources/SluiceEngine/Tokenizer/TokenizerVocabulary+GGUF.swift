extension TokenizerVocabulary {
    /// Reads the `tokenizer.ggml.*` keys (and `general.name`) of a GGUF file.
    /// Errors name the key that is missing or has the wrong type.
    public init(gguf file: GGUFFile) throws(TokenizerError) {
        let metadata = file.metadataTable
        do {
            let model = try metadata.string("tokenizer.ggml.model")
            let tokens = try metadata.stringArrayStorage("tokenizer.ggml.tokens")
            self.init(model: model, tokens: TokenizerStrings(storage: tokens.storage, ends: tokens.ends))
            preTokenizer = try metadata.stringIfPresent("tokenizer.ggml.pre")
            switch try metadata.arrayIfPresent("tokenizer.ggml.scores") {
            case nil: scores = nil
            case .float32(let values)?: scores = values
            case .int32(let values)?: scores = values.map { Float($0) }
            case let other?:
                throw TokenizerError("tokenizer.ggml.scores has type array of \(other.elementType), expected float32 or int32")
            }
            switch try metadata.arrayIfPresent("tokenizer.ggml.token_type") {
            case nil: tokenTypes = nil
            case .int32(let values)?: tokenTypes = values
            case let other?:
                throw TokenizerError("tokenizer.ggml.token_type has type array of \(other.elementType), expected int32")
            }
            if let lines = try metadata.stringArrayStorageIfPresent("tokenizer.ggml.merges") {
                merges = TokenizerStrings(storage: lines.storage, ends: lines.ends)
            }
            func id(_ key: String) throws(GGUFError) -> Int? {
                guard let value = try metadata.intIfPresent("tokenizer.ggml.\(key)") else { return nil }
                return value >= 0 ? value : nil
            }
            bosID = try id("bos_token_id")
            eosID = try id("eos_token_id")
            eotID = try id("eot_token_id")
            eomID = try id("eom_token_id")
            unknownID = try id("unknown_token_id")
            separatorID = try id("seperator_token_id")  // sic: llama.cpp's key
            paddingID = try id("padding_token_id")
            maskID = try id("mask_token_id")
            // The deprecated keys win when both are present, as in llama.cpp.
            fimPrefixID = try id("prefix_token_id") ?? id("fim_pre_token_id")
            fimSuffixID = try id("suffix_token_id") ?? id("fim_suf_token_id")
            fimMiddleID = try id("middle_token_id") ?? id("fim_mid_token_id")
            fimPadID = try id("fim_pad_token_id")
            fimRepoID = try id("fim_rep_token_id")
            fimSeparatorID = try id("fim_sep_token_id")
            addBOS = try metadata.boolIfPresent("tokenizer.ggml.add_bos_token")
            addEOS = try metadata.boolIfPresent("tokenizer.ggml.add_eos_token")
            addSpacePrefix = try metadata.boolIfPresent("tokenizer.ggml.add_space_prefix")
            removeExtraWhitespaces = try metadata.boolIfPresent("tokenizer.ggml.remove_extra_whitespaces")
            modelName = try metadata.stringIfPresent("general.name")
        } catch let error as GGUFError {
            throw TokenizerError("\(error)")
        } catch let error as TokenizerError {
            throw error
        } catch {
            throw TokenizerError("\(error)")
        }
    }
}

extension Tokenizer {
    /// The tokenizer of a GGUF model file.
    public convenience init(gguf file: GGUFFile) throws(TokenizerError) {
        try self.init(vocabulary: TokenizerVocabulary(gguf: file))
    }
}
