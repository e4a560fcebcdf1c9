#ifndef BERTH_CZLIB_SHIM_H
#define BERTH_CZLIB_SHIM_H
#include <zlib.h>
#endif
