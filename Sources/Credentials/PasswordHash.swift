import CCrypt

/// A bcrypt password hash (`$2b$`, `$2y$` as `htpasswd -B` writes, or `$2a$`), checked with libxcrypt.
public struct PasswordHash: Sendable, Equatable {
    public let text: String

    /// Fails for anything that is not a complete bcrypt hash: a plaintext password never passes for one.
    public init?(_ text: String) {
        let bytes = Array(text.utf8)
        // $2b$ + two cost digits + $ + 53 characters of salt and digest.
        guard bytes.count == 60, bytes[0] == UInt8(ascii: "$"), bytes[1] == UInt8(ascii: "2"),
            [UInt8(ascii: "a"), UInt8(ascii: "b"), UInt8(ascii: "y")].contains(bytes[2]),
            bytes[3] == UInt8(ascii: "$"), bytes[6] == UInt8(ascii: "$"),
            let cost = Int(String(decoding: bytes[4..<6], as: UTF8.self)), (4...31).contains(cost),
            bytes[7...].allSatisfy(Self.isBcryptBase64)
        else { return nil }
        self.text = text
    }

    /// Whether `password` hashes to this hash. Costs one bcrypt computation (tens of milliseconds at
    /// the usual cost of 10): call it off any event loop. The comparison takes the same time wherever
    /// the first difference is.
    public func matches(_ password: String) -> Bool {
        // A NUL would cut the password short in C: such a password is never the one hashed.
        guard !password.utf8.contains(0) else { return false }
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        data.initialize(to: crypt_data())
        defer { data.deinitialize(count: 1).deallocate() }
        guard let computed = crypt_r(password, text, data) else { return false }
        return constantTimeEquals(Array(String(cString: computed).utf8), Array(text.utf8))
    }

    /// Hashes `password` with a fresh random salt (`$2b$`, `cost` a power-of-two exponent).
    public static func make(password: String, cost: Int = 10) -> PasswordHash? {
        guard !password.utf8.contains(0), (4...31).contains(cost) else { return nil }
        var salt = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        guard crypt_gensalt_rn("$2b$", UInt(cost), nil, 0, &salt, Int32(salt.count)) != nil else { return nil }
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        data.initialize(to: crypt_data())
        defer { data.deinitialize(count: 1).deallocate() }
        return crypt_r(password, salt, data).flatMap { PasswordHash(String(cString: $0)) }
    }

    private static func isBcryptBase64(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "/"):
            return true
        default: return false
        }
    }
}

/// Byte strings compared in time that depends only on their lengths, not on where they differ.
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
    for index in 0..<max(a.count, b.count) {
        difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
    }
    return difference == 0
}
