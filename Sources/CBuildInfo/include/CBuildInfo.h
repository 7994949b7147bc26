#ifndef C_BUILD_INFO_H
#define C_BUILD_INFO_H

/// The git commit the package was built from ("unknown" outside a git checkout); set by Package.swift.
const char *replication_sidecar_build_revision(void);

#endif
