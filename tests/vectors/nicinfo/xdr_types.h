/*
 * The two types nicinfo.x uses beyond rpcgen's own, as open-vm-tools' build provides them
 * (its rpcgen wrapper points the generated code at lib/include/vmxrpc.h instead of
 * <rpc/rpc.h>). Written for this generator: Bool is a char sent with xdr_char, uint32 is
 * sent with xdr_u_int32_t.
 */
#ifndef NICINFO_XDR_TYPES_H
#define NICINFO_XDR_TYPES_H

#include <stdint.h>
#include <rpc/rpc.h>

typedef char Bool;
typedef uint32_t uint32;

static inline bool_t xdr_Bool(XDR *xdrs, Bool *b) { return xdr_char(xdrs, b); }
static inline bool_t xdr_uint32(XDR *xdrs, uint32 *v) { return xdr_u_int32_t(xdrs, v); }

#endif
