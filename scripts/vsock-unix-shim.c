/*
 * LD_PRELOAD shim for benchmarking open-vm-tools' vmtoolsd against vmx-sim: vmtoolsd speaks
 * vsock to the VMX; this maps its AF_VSOCK sockets onto the simulator's Unix sockets in
 * $VSOCK_SHIM_DIR (TCLO port 975 -> tclo.sock, RPCI port 976 -> rpci.sock, as toolbox's
 * unix:DIR transport names them). Nothing else is touched. Built by scripts/bench-vmtoolsd.sh.
 *
 * Facts used: AF_VSOCK is address family 40, and vmtoolsd probes for it with a datagram socket
 * before it connects (lib/include/vmci_sockets.h); it binds a privileged source port before
 * connecting to CID 0, VMCI_HYPERVISOR_CONTEXT_ID (lib/rpcChannel/simpleSocket.c, lib/asyncsocket/asyncsocket.c); TCLO
 * listens on 975, RPCI on 976 (lib/include/vmware/guestrpc/tclodefs.h). vmtoolsd refuses to run
 * outside a VMware VM (lib/vmCheck/vmcheck.c): the two checks it calls are answered here too.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdint.h>

#define SHIM_AF_VSOCK 40
#define SHIM_TCLO_PORT 975
#define SHIM_RPCI_PORT 976
#define SHIM_HYPERVISOR_CID 0
#define SHIM_GUEST_CID 3
#define SHIM_MAX_FD 65536

struct shim_sockaddr_vm {
   unsigned short svm_family;
   unsigned short svm_reserved1;
   unsigned int svm_port;
   unsigned int svm_cid;
   unsigned char svm_zero[16 - sizeof(unsigned short) * 2 - sizeof(unsigned int) * 2];
};

/* Which descriptors stand for a vsock connection, and to which port. */
static unsigned short vsock_port[SHIM_MAX_FD];

static int (*real_socket)(int, int, int);
static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);

static void resolve(void)
{
   if (!real_socket) {
      real_socket = dlsym(RTLD_NEXT, "socket");
      real_bind = dlsym(RTLD_NEXT, "bind");
      real_connect = dlsym(RTLD_NEXT, "connect");
   }
}

int socket(int domain, int type, int protocol)
{
   resolve();
   int fd = real_socket(domain == SHIM_AF_VSOCK ? AF_UNIX : domain, type,
                        domain == SHIM_AF_VSOCK ? 0 : protocol);
   if (fd >= 0 && fd < SHIM_MAX_FD) {
      vsock_port[fd] = 0;
   }
   return fd;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
   resolve();
   if (addr && addr->sa_family == SHIM_AF_VSOCK) {
      /* A Unix client socket needs no source port. */
      return 0;
   }
   return real_bind(fd, addr, len);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
   resolve();
   if (!addr || addr->sa_family != SHIM_AF_VSOCK) {
      return real_connect(fd, addr, len);
   }
   const struct shim_sockaddr_vm *vm = (const struct shim_sockaddr_vm *)addr;
   const char *dir = getenv("VSOCK_SHIM_DIR");
   const char *name = vm->svm_port == SHIM_TCLO_PORT ? "tclo.sock"
                    : vm->svm_port == SHIM_RPCI_PORT ? "rpci.sock" : NULL;
   if (!dir || !name || vm->svm_cid != SHIM_HYPERVISOR_CID) {
      errno = ECONNREFUSED;
      return -1;
   }
   struct sockaddr_un un;
   memset(&un, 0, sizeof un);
   un.sun_family = AF_UNIX;
   if (snprintf(un.sun_path, sizeof un.sun_path, "%s/%s", dir, name) >= (int)sizeof un.sun_path) {
      errno = ENAMETOOLONG;
      return -1;
   }
   int rc = real_connect(fd, (struct sockaddr *)&un, sizeof un);
   if (rc == 0 && fd >= 0 && fd < SHIM_MAX_FD) {
      vsock_port[fd] = (unsigned short)vm->svm_port;
   }
   return rc;
}

static int vsock_name(int fd, struct sockaddr *addr, socklen_t *len, int peer)
{
   struct shim_sockaddr_vm vm;
   memset(&vm, 0, sizeof vm);
   vm.svm_family = SHIM_AF_VSOCK;
   vm.svm_port = peer ? vsock_port[fd] : 1023;
   vm.svm_cid = peer ? SHIM_HYPERVISOR_CID : SHIM_GUEST_CID;
   socklen_t n = *len < sizeof vm ? *len : sizeof vm;
   memcpy(addr, &vm, n);
   *len = sizeof vm;
   return 0;
}

int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
   static int (*real)(int, struct sockaddr *, socklen_t *);
   if (!real) {
      real = dlsym(RTLD_NEXT, "getsockname");
   }
   if (fd >= 0 && fd < SHIM_MAX_FD && vsock_port[fd]) {
      return vsock_name(fd, addr, len, 0);
   }
   return real(fd, addr, len);
}

int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
   static int (*real)(int, struct sockaddr *, socklen_t *);
   if (!real) {
      real = dlsym(RTLD_NEXT, "getpeername");
   }
   if (fd >= 0 && fd < SHIM_MAX_FD && vsock_port[fd]) {
      return vsock_name(fd, addr, len, 1);
   }
   return real(fd, addr, len);
}

/* lib/vmCheck/vmcheck.c: "in a VMware VM", version 6 (VERSION_MAGIC), product type 2 (ESX). */
int VmCheck_IsVirtualWorld(void)
{
   return 1;
}

int VmCheck_GetVersion(uint32_t *version, uint32_t *type)
{
   *version = 6;
   *type = 2;
   return 1;
}
