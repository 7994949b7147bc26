/// `Accept` and `Accept-Encoding` as RFC 9110 reads them: a listed value with `q=0` is refused, and the
/// most specific entry that matches decides (`text/plain` over `text/*` over `*/*`).
enum ContentNegotiation {
    /// OpenMetrics only when asked for by name and liked at least as much as the text format.
    static func prefersOpenMetrics(accept: String?) -> Bool {
        guard let accept else { return false }
        let entries = parse(accept)
        guard let openMetrics = quality(of: "application/openmetrics-text", in: entries, exactOnly: true),
            openMetrics > 0
        else { return false }
        return openMetrics >= (quality(of: "text/plain", in: entries, exactOnly: false) ?? 0)
    }

    static func acceptsGzip(acceptEncoding: String?) -> Bool {
        guard let acceptEncoding else { return false }
        let entries = parse(acceptEncoding)
        return (entries.first { $0.value == "gzip" } ?? entries.first { $0.value == "*" }).map { $0.quality > 0 }
            ?? false
    }

    struct Entry {
        var value: String
        var quality: Double
    }

    /// Comma-separated values with `;`-separated parameters; a `q` that is not a number counts as 1.
    static func parse(_ header: String) -> [Entry] {
        header.split(separator: ",").compactMap { item in
            let parts = item.split(separator: ";").map { $0.trimmingWhitespace().lowercased() }
            guard let value = parts.first, !value.isEmpty else { return nil }
            var quality = 1.0
            for parameter in parts.dropFirst() where parameter.hasPrefix("q=") {
                quality = Double(parameter.dropFirst(2)).map { min(max($0, 0), 1) } ?? 1
            }
            return Entry(value: value, quality: quality)
        }
    }

    /// The quality of the most specific matching entry, or nil when none matches.
    static func quality(of mediaType: String, in entries: [Entry], exactOnly: Bool) -> Double? {
        if let exact = entries.first(where: { $0.value == mediaType }) { return exact.quality }
        guard !exactOnly else { return nil }
        let wildcard = mediaType.prefix { $0 != "/" } + "/*"
        return (entries.first { $0.value == wildcard } ?? entries.first { $0.value == "*/*" })?.quality
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> Substring {
        let start = firstIndex { $0 != " " && $0 != "\t" } ?? endIndex
        let end = lastIndex { $0 != " " && $0 != "\t" }.map(index(after:)) ?? start
        return self[start..<end]
    }
}
