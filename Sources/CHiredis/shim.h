#ifndef C_HIREDIS_SHIM_H
#define C_HIREDIS_SHIM_H

// Only the RESP reader and the command formatter are used: hiredis does no I/O here, NIO does.
#include <hiredis/hiredis.h>

#endif
