import CBuildInfo

/// What `--version` prints and `replication_sidecar_build_info` exports.
public enum BuildInfo {
    public static let version = "0.1.0"
    /// The git commit the package was built from, or `unknown` when built outside a git checkout.
    public static let revision = String(cString: replication_sidecar_build_revision())
}
