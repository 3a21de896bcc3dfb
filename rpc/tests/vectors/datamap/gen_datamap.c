/*
 * DataMap vectors from open-vm-tools' own lib/dataMap/dataMap.c (see gen.sh and README.md).
 *
 *   gen_datamap gen OUTDIR          writes theirs/<case>.hex (DataMap_Serialize of each case)
 *                                   and theirs/verdicts.txt (DataMap_Deserialize of crafted
 *                                   inputs: the error code it returns)
 *   gen_datamap check OUTDIR        reads ours/<case>.hex (the Rust encoder's bytes for the
 *                                   same cases), deserializes each with DataMap_Deserialize,
 *                                   compares it with the case built here, and writes
 *                                   ours/checked.txt
 *
 * The packet cases are built in the order and with the calls RpcInPackSendData
 * (lib/rpcIn/rpcin.c) and Socket_PackSendData (lib/rpcChannel/simpleSocket.c) use.
 * rpc/tests/datamap.rs builds the same cases with the crate's types.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vm_basic_types.h"
#include "dataMap.h"

/* lib/include/vmware/guestrpc/tclodefs.h */
#define GUESTRPCPKT_TYPE_DATA 1
#define GUESTRPCPKT_TYPE_PING 2
#define GUESTRPCPKT_FIELD_TYPE 1
#define GUESTRPCPKT_FIELD_PAYLOAD 2
#define GUESTRPCPKT_FIELD_FAST_CLOSE 3

static void
ok(ErrorCode res, const char *what)
{
   if (res != DMERR_SUCCESS) {
      fprintf(stderr, "gen_datamap: %s failed: %d\n", what, (int)res);
      exit(1);
   }
}

static char *
copy(const char *bytes, int32 len)
{
   char *p = malloc(len ? len : 1);

   if (p == NULL) {
      perror("malloc");
      exit(1);
   }
   memcpy(p, bytes, len);
   return p;
}

/* --------------------------------------------------------------------------------- cases */

/* RpcInPackSendData: type (PING when asked), then the payload when there is one. */
static void
rpcin_packet(DataMap *map, const char *buf, int32 len, Bool ping)
{
   ok(DataMap_Create(map), "DataMap_Create");
   ok(DataMap_SetInt64(map, GUESTRPCPKT_FIELD_TYPE,
                       ping ? GUESTRPCPKT_TYPE_PING : GUESTRPCPKT_TYPE_DATA, TRUE),
      "set type");
   if (buf != NULL && len > 0) {
      ok(DataMap_SetString(map, GUESTRPCPKT_FIELD_PAYLOAD, copy(buf, len), len, TRUE),
         "set payload");
   }
}

/* Socket_PackSendData: DATA, the payload, and FAST_CLOSE = TRUE when asked. */
static void
socket_packet(DataMap *map, const char *buf, int32 len, Bool fastClose)
{
   ok(DataMap_Create(map), "DataMap_Create");
   ok(DataMap_SetInt64(map, GUESTRPCPKT_FIELD_TYPE, GUESTRPCPKT_TYPE_DATA, TRUE), "set type");
   ok(DataMap_SetString(map, GUESTRPCPKT_FIELD_PAYLOAD, copy(buf, len), len, TRUE),
      "set payload");
   if (fastClose) {
      ok(DataMap_SetInt64(map, GUESTRPCPKT_FIELD_FAST_CLOSE, TRUE, TRUE), "set fast close");
   }
}

static void
set_int64(DataMap *map, DMKeyType id, int64 v)
{
   ok(DataMap_SetInt64(map, id, v, TRUE), "DataMap_SetInt64");
}

static void
set_string(DataMap *map, DMKeyType id, const char *s, int32 len)
{
   ok(DataMap_SetString(map, id, copy(s, len), len, TRUE), "DataMap_SetString");
}

static void
set_int64_list(DataMap *map, DMKeyType id, const int64 *v, int32 n)
{
   int64 *list = (int64 *)copy((const char *)v, n * (int32)sizeof *v);

   ok(DataMap_SetInt64List(map, id, list, n, TRUE), "DataMap_SetInt64List");
}

/* strs: n strings of lens[i] bytes each. */
static void
set_string_list(DataMap *map, DMKeyType id, const char *const *strs, const int32 *lens,
                int32 n)
{
   /* A NULL-terminated list of strings and a -1-terminated list of their lengths. */
   char **list = calloc(n + 1, sizeof *list);
   int32 *lengths = calloc(n + 1, sizeof *lengths);
   int32 i;

   if (list == NULL || lengths == NULL) {
      perror("calloc");
      exit(1);
   }
   for (i = 0; i < n; i++) {
      list[i] = copy(strs[i], lens[i]);
      lengths[i] = lens[i];
   }
   lengths[n] = -1;
   ok(DataMap_SetStringList(map, id, list, lengths, TRUE), "DataMap_SetStringList");
}

static char big_payload[5000];

/* Every case: its name, the field ids it sets (for the check), and how to build it. */
typedef struct {
   const char *name;
   void (*build)(DataMap *map);
   DMKeyType ids[48];
   int nids;
} Case;

static void
tclo_reply(DataMap *m)
{
   rpcin_packet(m, "OK ATR toolbox", 14, FALSE);
}

static void
tclo_ping(DataMap *m)
{
   rpcin_packet(m, NULL, 0, TRUE);
}

static void
tclo_empty_reply(DataMap *m)
{
   /* A reply of zero bytes: RpcInPackSendData leaves the payload out. */
   rpcin_packet(m, "", 0, FALSE);
}

static void
rpci_request(DataMap *m)
{
   socket_packet(m, "info-get guestinfo.ip", 21, FALSE);
}

static void
rpci_fast_close(DataMap *m)
{
   socket_packet(m, "tools.set.version 2147483647", 28, TRUE);
}

static void
rpci_binary(DataMap *m)
{
   /* Bytes a text API would cut or change: NUL, 0xff, a trailing NUL. */
   static const char bin[] = { 'f', ' ', 0x00, 0x01, (char)0xff, (char)0x80, 0x00 };

   socket_packet(m, bin, sizeof bin, FALSE);
}

static void
rpci_large(DataMap *m)
{
   socket_packet(m, big_payload, sizeof big_payload, FALSE);
}

static void
int64_values(DataMap *m)
{
   set_int64(m, 1, 0);
   set_int64(m, 2, -1);
   set_int64(m, 3, INT64_MIN);
   set_int64(m, 4, INT64_MAX);
   set_int64(m, 5, 0x0102030405060708LL);
   set_int64(m, 6, -2);
}

static void
lists(DataMap *m)
{
   static const int64 nums[] = { 1, -2, INT64_MAX };
   static const char *const strs[] = { "ab", "c", "\0\xff\x01", "guestinfo" };
   static const int32 lens[] = { 2, 1, 3, 9 };

   set_int64_list(m, 1, nums, 3);
   set_string_list(m, 2, strs, lens, 4);
   set_int64_list(m, 3, nums, 0);
   set_string_list(m, 4, strs, lens, 0);
   set_string(m, 5, "x", 1);
}

static void
many_ids(DataMap *m)
{
   DMKeyType id;

   for (id = 1; id <= 40; id++) {
      set_int64(m, id, id * 1000);
   }
}

static void
odd_ids(DataMap *m)
{
   set_int64(m, 0, 10);
   set_int64(m, -1, 11);
   set_string(m, 1000, "thousand", 8);
   set_int64(m, INT32_MAX, 12);
   set_int64(m, INT32_MIN, 13);
   set_int64(m, 256, 14);
}

static void
empty_map(DataMap *m)
{
   ok(DataMap_Create(m), "DataMap_Create");
}

static void
with_create(DataMap *m, void (*fill)(DataMap *))
{
   ok(DataMap_Create(m), "DataMap_Create");
   fill(m);
}

static void int64_values_case(DataMap *m) { with_create(m, int64_values); }
static void lists_case(DataMap *m) { with_create(m, lists); }
static void many_ids_case(DataMap *m) { with_create(m, many_ids); }
static void odd_ids_case(DataMap *m) { with_create(m, odd_ids); }

static Case cases[] = {
   { "tclo-reply", tclo_reply, { 1, 2 }, 2 },
   { "tclo-ping", tclo_ping, { 1 }, 1 },
   { "tclo-empty-reply", tclo_empty_reply, { 1 }, 1 },
   { "rpci-request", rpci_request, { 1, 2 }, 2 },
   { "rpci-fast-close", rpci_fast_close, { 1, 2, 3 }, 3 },
   { "rpci-binary", rpci_binary, { 1, 2 }, 2 },
   { "rpci-large", rpci_large, { 1, 2 }, 2 },
   { "int64-values", int64_values_case, { 1, 2, 3, 4, 5, 6 }, 6 },
   { "lists", lists_case, { 1, 2, 3, 4, 5 }, 5 },
   { "many-ids", many_ids_case,
     { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
       21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40 }, 40 },
   { "odd-ids", odd_ids_case, { 0, -1, 1000, INT32_MAX, INT32_MIN, 256 }, 6 },
   { "empty-map", empty_map, { 0 }, 0 },
};

#define NCASES (sizeof cases / sizeof cases[0])

/* ------------------------------------------------------------------------ comparisons */

/* TRUE when field id has the same type and value in both maps. */
static Bool
same_field(const DataMap *a, const DataMap *b, DMKeyType id)
{
   DMFieldType type = DataMap_GetType(a, id);

   if (type != DataMap_GetType(b, id)) {
      return FALSE;
   }
   switch (type) {
   case DMFIELDTYPE_INT64: {
      int64 x, y;
      return DataMap_GetInt64(a, id, &x) == DMERR_SUCCESS &&
             DataMap_GetInt64(b, id, &y) == DMERR_SUCCESS && x == y;
   }
   case DMFIELDTYPE_STRING: {
      char *x, *y;
      int32 xl, yl;
      return DataMap_GetString(a, id, &x, &xl) == DMERR_SUCCESS &&
             DataMap_GetString(b, id, &y, &yl) == DMERR_SUCCESS && xl == yl &&
             memcmp(x, y, xl) == 0;
   }
   case DMFIELDTYPE_INT64LIST: {
      int64 *x, *y;
      int32 xl, yl;
      return DataMap_GetInt64List(a, id, &x, &xl) == DMERR_SUCCESS &&
             DataMap_GetInt64List(b, id, &y, &yl) == DMERR_SUCCESS && xl == yl &&
             (xl == 0 || memcmp(x, y, xl * sizeof *x) == 0);
   }
   case DMFIELDTYPE_STRINGLIST: {
      char **x, **y;
      int32 *xl, *yl;
      int32 i;
      if (DataMap_GetStringList(a, id, &x, &xl) != DMERR_SUCCESS ||
          DataMap_GetStringList(b, id, &y, &yl) != DMERR_SUCCESS) {
         return FALSE;
      }
      for (i = 0; x[i] != NULL || y[i] != NULL; i++) {
         if (x[i] == NULL || y[i] == NULL || xl[i] != yl[i] || memcmp(x[i], y[i], xl[i]) != 0) {
            return FALSE;
         }
      }
      return TRUE;
   }
   default:
      return FALSE;
   }
}

/* ------------------------------------------------------------------------------ files */

static void
write_hex(const char *path, const char *buf, uint32 len)
{
   FILE *f = fopen(path, "w");
   uint32 i;

   if (f == NULL) {
      fprintf(stderr, "gen_datamap: %s: %s\n", path, strerror(errno));
      exit(1);
   }
   for (i = 0; i < len; i++) {
      fprintf(f, "%02x", (unsigned char)buf[i]);
      if (i + 1 == len || (i + 1) % 32 == 0) {
         fputc('\n', f);
      } else if ((i + 1) % 4 == 0) {
         fputc(' ', f);
      }
   }
   if (fclose(f) != 0) {
      fprintf(stderr, "gen_datamap: %s: %s\n", path, strerror(errno));
      exit(1);
   }
}

/* Reads a hex file written by write_hex or by the Rust side; *len gets the byte count. */
static char *
read_hex(const char *path, uint32 *len)
{
   FILE *f = fopen(path, "r");
   char *out;
   size_t cap = 1 << 16, n = 0;
   int c, hi = -1;

   if (f == NULL) {
      fprintf(stderr, "gen_datamap: %s: %s\n", path, strerror(errno));
      exit(1);
   }
   out = malloc(cap);
   while (out != NULL && (c = fgetc(f)) != EOF) {
      int v;
      if (c >= '0' && c <= '9') {
         v = c - '0';
      } else if (c >= 'a' && c <= 'f') {
         v = c - 'a' + 10;
      } else {
         continue;
      }
      if (hi < 0) {
         hi = v;
         continue;
      }
      if (n == cap) {
         cap *= 2;
         out = realloc(out, cap);
         if (out == NULL) {
            break;
         }
      }
      out[n++] = (char)(hi << 4 | v);
      hi = -1;
   }
   fclose(f);
   if (out == NULL) {
      perror("malloc");
      exit(1);
   }
   *len = (uint32)n;
   return out;
}

/*
 * Inputs the decoder must judge, each as hex: DataMap_Deserialize's verdict on it goes to
 * verdicts.txt. Most are malformed on purpose; the empty-string ones are what
 * DataMap_Serialize itself writes for a string of length 0.
 */
static const char *const crafted[] = {
   "",
   "000000",
   "00000000",
   "00000000 00",
   "ffffffff",
   "00000010 00000001 00000001",
   "00000008 00000000 00000001",
   "00000008 00000005 00000001",
   "00000008 ffffffff 00000001",
   "00000020 00000001 00000001 00000001 00000000 00000001 00000001 00000002 00000000",
   "0000000c 00000002 00000002 00000000",
   "0000000c 00000002 00000002 80000000",
   "0000000e 00000002 00000002 00000010 6162",
   "0000000c 00000003 00000009 7fffffff",
   "0000000c 00000004 00000009 7fffffff",
   "0000000c 00000003 00000009 ffffffff",
   "0000000c 00000001 00000001 00000001",
   "0000000c 00000003 00000001 00000000",
   "00000010 00000004 00000001 00000001 00000000",
   "0000000d 00000002 00000002 00000001 41",
   "0000000c 00000002 00000002 00000001 41",
   "0000000e 00000002 00000002 00000001 41 42",
   "00000014 00000004 00000002 00000002 00000001 41 00000001",
};

static const char *
error_name(ErrorCode e)
{
   switch (e) {
   case DMERR_SUCCESS: return "DMERR_SUCCESS";
   case DMERR_NOT_FOUND: return "DMERR_NOT_FOUND";
   case DMERR_ALREADY_EXIST: return "DMERR_ALREADY_EXIST";
   case DMERR_DUPLICATED_FIELD_IDS: return "DMERR_DUPLICATED_FIELD_IDS";
   case DMERR_INSUFFICIENT_MEM: return "DMERR_INSUFFICIENT_MEM";
   case DMERR_TYPE_MISMATCH: return "DMERR_TYPE_MISMATCH";
   case DMERR_INVALID_ARGS: return "DMERR_INVALID_ARGS";
   case DMERR_UNKNOWN_TYPE: return "DMERR_UNKNOWN_TYPE";
   case DMERR_TRUNCATED_DATA: return "DMERR_TRUNCATED_DATA";
   case DMERR_BUFFER_TOO_SMALL: return "DMERR_BUFFER_TOO_SMALL";
   case DMERR_INTEGER_OVERFLOW: return "DMERR_INTEGER_OVERFLOW";
   case DMERR_BAD_DATA: return "DMERR_BAD_DATA";
   default: return "unknown";
   }
}

static char *
parse_hex(const char *text, uint32 *len)
{
   size_t n = strlen(text);
   char *out = malloc(n / 2 + 1);
   int hi = -1;

   if (out == NULL) {
      perror("malloc");
      exit(1);
   }
   *len = 0;
   for (; *text; text++) {
      int c = *text, v;
      if (c >= '0' && c <= '9') {
         v = c - '0';
      } else if (c >= 'a' && c <= 'f') {
         v = c - 'a' + 10;
      } else {
         continue;
      }
      if (hi < 0) {
         hi = v;
      } else {
         out[(*len)++] = (char)(hi << 4 | v);
         hi = -1;
      }
   }
   return out;
}

static void
judge(FILE *f, const char *hex, const char *bytes, uint32 len)
{
   DataMap m;
   ErrorCode res = DataMap_Deserialize(bytes, (int32)len, &m);

   if (res == DMERR_SUCCESS) {
      DataMap_Destroy(&m);
   }
   fprintf(f, "%s | %s\n", error_name(res), hex);
}

static void
gen(const char *dir)
{
   char path[4096];
   size_t i;
   FILE *f;

   for (i = 0; i < NCASES; i++) {
      DataMap m, back;
      char *buf;
      uint32 len;
      int k;

      cases[i].build(&m);
      ok(DataMap_Serialize(&m, &buf, &len), "DataMap_Serialize");
      /* The reference's own decoder takes its bytes back to the same fields. */
      ok(DataMap_Deserialize(buf, (int32)len, &back), "DataMap_Deserialize");
      for (k = 0; k < cases[i].nids; k++) {
         if (!same_field(&m, &back, cases[i].ids[k])) {
            fprintf(stderr, "gen_datamap: %s: field %d differs after a round trip\n",
                    cases[i].name, cases[i].ids[k]);
            exit(1);
         }
      }
      snprintf(path, sizeof path, "%s/theirs/%s.hex", dir, cases[i].name);
      write_hex(path, buf, len);
      printf("theirs/%s.hex: %u bytes\n", cases[i].name, len);
      free(buf);
      DataMap_Destroy(&m);
      DataMap_Destroy(&back);
   }

   snprintf(path, sizeof path, "%s/theirs/verdicts.txt", dir);
   f = fopen(path, "w");
   if (f == NULL) {
      fprintf(stderr, "gen_datamap: %s: %s\n", path, strerror(errno));
      exit(1);
   }
   fprintf(f, "# DataMap_Deserialize's result | the input, hex\n");
   for (i = 0; i < sizeof crafted / sizeof crafted[0]; i++) {
      uint32 len;
      char *bytes = parse_hex(crafted[i], &len);

      judge(f, crafted[i], bytes, len);
      free(bytes);
   }
   /* What DataMap_Serialize writes for an empty string, and for a list holding one. */
   {
      static const char *const one_empty[] = { "" };
      static const int32 zero[] = { 0 };
      DataMap m;
      char *buf, *hex;
      uint32 len, j;

      for (j = 0; j < 2; j++) {
         uint32 k;
         ok(DataMap_Create(&m), "DataMap_Create");
         if (j == 0) {
            set_string(&m, 7, "", 0);
         } else {
            set_string_list(&m, 7, one_empty, zero, 1);
         }
         ok(DataMap_Serialize(&m, &buf, &len), "DataMap_Serialize");
         hex = malloc(len * 3 + 1);
         if (hex == NULL) {
            perror("malloc");
            exit(1);
         }
         hex[0] = '\0';
         for (k = 0; k < len; k++) {
            sprintf(hex + strlen(hex), k % 4 == 0 && k ? " %02x" : "%02x", (unsigned char)buf[k]);
         }
         judge(f, hex, buf, len);
         free(hex);
         free(buf);
         DataMap_Destroy(&m);
      }
   }
   if (fclose(f) != 0) {
      fprintf(stderr, "gen_datamap: %s: %s\n", path, strerror(errno));
      exit(1);
   }
   printf("theirs/verdicts.txt\n");
}

static void
check(const char *dir)
{
   char path[4096];
   size_t i;
   FILE *out;
   int failed = 0;

   snprintf(path, sizeof path, "%s/ours/checked.txt", dir);
   out = fopen(path, "w");
   if (out == NULL) {
      fprintf(stderr, "gen_datamap: %s: %s\n", path, strerror(errno));
      exit(1);
   }
   fprintf(out, "# ours/<case>.hex through DataMap_Deserialize, compared with the case as "
                "gen_datamap builds it\n");
   for (i = 0; i < NCASES; i++) {
      DataMap want, got;
      char *bytes;
      uint32 len;
      ErrorCode res;
      int k;
      const char *verdict = "same";

      snprintf(path, sizeof path, "%s/ours/%s.hex", dir, cases[i].name);
      bytes = read_hex(path, &len);
      cases[i].build(&want);
      res = DataMap_Deserialize(bytes, (int32)len, &got);
      if (res != DMERR_SUCCESS) {
         verdict = error_name(res);
      } else {
         if (HashMap_Count(got.map) != (uint32)cases[i].nids) {
            verdict = "different-field-count";
         }
         for (k = 0; k < cases[i].nids; k++) {
            if (!same_field(&want, &got, cases[i].ids[k])) {
               verdict = "different";
            }
         }
         DataMap_Destroy(&got);
      }
      DataMap_Destroy(&want);
      free(bytes);
      fprintf(out, "%s %s\n", cases[i].name, verdict);
      printf("ours/%s.hex: %s\n", cases[i].name, verdict);
      failed |= strcmp(verdict, "same") != 0;
   }
   if (fclose(out) != 0) {
      perror("fclose");
      exit(1);
   }
   exit(failed);
}

int
main(int argc, char **argv)
{
   size_t i;

   for (i = 0; i < sizeof big_payload; i++) {
      big_payload[i] = (char)(i * 7 + 3);
   }
   if (argc == 3 && strcmp(argv[1], "gen") == 0) {
      gen(argv[2]);
   } else if (argc == 3 && strcmp(argv[1], "check") == 0) {
      check(argv[2]);
   } else {
      fprintf(stderr, "usage: gen_datamap gen|check DIR\n");
      return 2;
   }
   return 0;
}
