#ifndef C_CRYPT_SHIM_H
#define C_CRYPT_SHIM_H

#include <crypt.h>

#endif
