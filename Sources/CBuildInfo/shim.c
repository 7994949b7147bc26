#include "CBuildInfo.h"

#ifndef BUILD_REVISION
#define BUILD_REVISION "unknown"
#endif

const char *replication_sidecar_build_revision(void) { return BUILD_REVISION; }
