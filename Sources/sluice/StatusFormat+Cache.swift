import SluiceCore
import SluiceQueue

extension StatusFormat {
    /// The result cache's share of a job, for `status`: usage above includes these hits at their original cost.
    static func cacheLine(_ counts: CacheHitCounts) -> String {
        "  result cache: \(counts.hits) results answered from the cache (\(counts.completionTokens) of the completion tokens above were computed once, earlier)"
    }

    /// `json` with `cache_hits` and `cached_completion_tokens` added.
    static func addingCacheHits(_ json: JSON, _ counts: CacheHitCounts) -> JSON {
        guard case var .object(fields) = json else { return json }
        fields.append((key: "cache_hits", value: .int(counts.hits)))
        fields.append((key: "cached_completion_tokens", value: .int(counts.completionTokens)))
        return .object(fields)
    }
}
