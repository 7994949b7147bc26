import Credentials
import Foundation
import Yams

/// Who may scrape and how: TLS and basic-auth users, from flags or from a `--web.config.file` in the
/// Prometheus exporter-toolkit's YAML format. Compared as a whole to notice changes.
public struct EndpointSecurity: Sendable, Equatable {
    public var tls: TLSSettings?
    /// Users of HTTP basic auth, with bcrypt hashes; nil: no authentication.
    public var users: CredentialsFile?

    public init(tls: TLSSettings? = nil, users: CredentialsFile? = nil) {
        self.tls = tls
        self.users = users
    }
}

/// HTTPS for the endpoint: the PEM texts themselves, so that a replaced file is a changed setting.
public struct TLSSettings: Sendable, Equatable {
    public var certificatePEM: String
    public var keyPEM: String
    public var clientAuth: ClientAuth
    /// CA certificates that client certificates are verified against.
    public var clientCAPEM: String?
    public var minVersion: TLSVersion

    public init(
        certificatePEM: String, keyPEM: String, clientAuth: ClientAuth = .none, clientCAPEM: String? = nil,
        minVersion: TLSVersion = .tls12
    ) {
        self.certificatePEM = certificatePEM
        self.keyPEM = keyPEM
        self.clientAuth = clientAuth
        self.clientCAPEM = clientCAPEM
        self.minVersion = minVersion
    }

    /// exporter-toolkit's `client_auth_type` values (Go's `tls.ClientAuthType`).
    public enum ClientAuth: String, Sendable, CaseIterable {
        case none = "NoClientCert"
        case request = "RequestClientCert"
        case requireAny = "RequireAnyClientCert"
        case verifyIfGiven = "VerifyClientCertIfGiven"
        case requireAndVerify = "RequireAndVerifyClientCert"

        /// Whether a connection whose certificate checked out as `status` may be served.
        func accepts(_ status: ClientCertificate) -> Bool {
            switch self {
            case .none, .request: true
            case .requireAny: status != .absent
            case .verifyIfGiven: status != .invalid
            case .requireAndVerify: status == .verified
            }
        }
    }

    /// exporter-toolkit's `min_version` values.
    public enum TLSVersion: String, Sendable, CaseIterable {
        case tls10 = "TLS10"
        case tls11 = "TLS11"
        case tls12 = "TLS12"
        case tls13 = "TLS13"

        /// The GnuTLS priority string allowing this version and newer.
        var gnuTLSPriorities: String {
            switch self {
            case .tls13: "NORMAL:-VERS-ALL:+VERS-TLS1.3"
            case .tls12: "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
            case .tls11: "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+VERS-TLS1.1"
            case .tls10: "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+VERS-TLS1.1:+VERS-TLS1.0"
            }
        }
    }
}

/// What a connection's client certificate turned out to be.
public enum ClientCertificate: Sendable {
    case absent, verified, invalid
}

public struct WebConfigurationError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
}

extension EndpointSecurity {
    /// Reads a web configuration file: `tls_server_config` (`cert_file`, `key_file`, `client_auth_type`,
    /// `client_ca_file`, `min_version`) and `basic_auth_users` (name: bcrypt hash). File names are
    /// relative to the file's directory. Anything else is refused rather than ignored.
    public static func load(webConfigFile path: String) throws(WebConfigurationError) -> EndpointSecurity {
        func fail(_ why: String) -> WebConfigurationError { WebConfigurationError("\(path): \(why)") }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw fail("cannot read the file") }
        let document: Any?
        do {
            document = try Yams.load(yaml: text)
        } catch {
            throw fail("not valid YAML: \(error)")
        }
        guard let top = (document ?? [String: Any]()) as? [String: Any] else { throw fail("expected a mapping") }
        try checkKeys(top, allowed: ["tls_server_config", "basic_auth_users"], in: "the top level", fail)
        var security = EndpointSecurity()
        if let tls = top["tls_server_config"] {
            security.tls = try tlsSettings(tls, relativeTo: (path as NSString).deletingLastPathComponent, fail)
        }
        if let users = top["basic_auth_users"] {
            guard let users = users as? [String: Any] else { throw fail("basic_auth_users must map user names to bcrypt hashes") }
            var hashes: [String: PasswordHash] = [:]
            for (user, value) in users {
                guard let text = value as? String, let hash = PasswordHash(text) else {
                    throw fail(
                        "the password of \(user) in basic_auth_users is not a bcrypt hash; store a hash, e.g. what "
                            + "`htpasswd -nB \(user)` prints after the colon")
                }
                hashes[user] = hash
            }
            security.users = CredentialsFile(hashes: hashes)
        }
        return security
    }

    private static func tlsSettings(
        _ value: Any, relativeTo directory: String, _ fail: (String) -> WebConfigurationError
    ) throws(WebConfigurationError) -> TLSSettings {
        guard let tls = value as? [String: Any] else { throw fail("tls_server_config must be a mapping") }
        try checkKeys(
            tls, allowed: ["cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"],
            in: "tls_server_config", fail)
        func file(_ key: String) throws(WebConfigurationError) -> String? {
            guard let name = tls[key] else { return nil }
            guard let name = name as? String, !name.isEmpty else { throw fail("\(key) must be a file name") }
            let resolved = name.hasPrefix("/") ? name : directory.isEmpty ? name : directory + "/" + name
            guard let contents = try? String(contentsOfFile: resolved, encoding: .utf8) else {
                throw fail("\(key): cannot read \(resolved)")
            }
            return contents
        }
        guard let certificate = try file("cert_file"), let key = try file("key_file") else {
            throw fail("tls_server_config needs cert_file and key_file")
        }
        var settings = TLSSettings(certificatePEM: certificate, keyPEM: key, clientCAPEM: try file("client_ca_file"))
        if let name = tls["client_auth_type"] {
            guard let name = name as? String, let clientAuth = TLSSettings.ClientAuth(rawValue: name) else {
                throw fail(
                    "client_auth_type must be one of "
                        + TLSSettings.ClientAuth.allCases.map(\.rawValue).joined(separator: ", "))
            }
            settings.clientAuth = clientAuth
        }
        // libmicrohttpd asks for a client certificate only when it has CAs to check it against.
        if settings.clientAuth != .none, settings.clientCAPEM == nil {
            throw fail("client_auth_type \(settings.clientAuth.rawValue) needs client_ca_file")
        }
        if let name = tls["min_version"] {
            guard let name = name as? String, let version = TLSSettings.TLSVersion(rawValue: name) else {
                throw fail(
                    "min_version must be one of " + TLSSettings.TLSVersion.allCases.map(\.rawValue).joined(separator: ", "))
            }
            settings.minVersion = version
        }
        return settings
    }

    private static func checkKeys(
        _ mapping: [String: Any], allowed: Set<String>, in place: String, _ fail: (String) -> WebConfigurationError
    ) throws(WebConfigurationError) {
        if let unknown = mapping.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw fail("\(unknown) in \(place) is not supported (supported: \(allowed.sorted().joined(separator: ", ")))")
        }
    }
}
