#pragma once
// A SQLite VFS shim that combines a transaction's WAL writes into one write(2).
//
// SQLite appends each WAL frame with two pwrite calls (the 24-byte frame header, then the page) and fsyncs at
// commit. A 4.3 KB Stripe event fills ~1.6 pages, so a group commit of 50 events made ~160 pwrite calls, each
// a syscall (costly in a VM) that also zero-fills the fresh page-cache page the 24-byte header lands on. This
// shim keeps the frames of a WAL in memory while they are contiguous and writes them in large chunks before
// anyone can need them:
//   - before the WAL file is synced, read, truncated, sized or closed, or written somewhere else;
//   - when any connection to the same database calls xShmBarrier. SQLite publishes new frames to other
//     connections by writing the wal-index header, and it calls xShmBarrier right before that (walIndexWriteHdr
//     in wal.c), so no connection can see a frame that is still only in this buffer;
//   - when the buffer reaches kWalWriteBufferBytesMax.
// What reaches the file, and in which order, is what the plain "unix" VFS would have written, only in fewer calls;
// an fsync'd commit is exactly as durable. Everything else is forwarded to the default VFS unchanged.
// A failed write is returned to SQLite where SQLite asked for it (sync, read, truncate, ...). Where it cannot be
// (a barrier, or another connection's read), that WAL file fails every later write and sync until it is closed,
// since frames may have been published without their bytes.
#include <cstddef>

namespace tally::sqlite {

constexpr const char* kWalWriteVfsName = "tally-wal-write";
constexpr size_t kWalWriteBufferBytesMax = size_t{1} * 1024 * 1024;  // a larger transaction is written in pieces
// The unix VFS writes at most 128 KiB - 1 bytes per call (os_unix.c, seekAndWriteFd masks the length with
// 0x1ffff), so a buffer goes out in chunks of this size: 31 pages.
constexpr size_t kWalWriteChunkBytes = size_t{31} * 4096;

/// Registers the shim over the current default VFS (once per process; thread-safe). Returns its name for
/// sqlite3_open_v2, or nullptr if registration failed (callers then use the default VFS).
const char* RegisterWalWriteVfs();

/// pwrite calls the shim has made to WAL files, and WAL writes it was handed (for tests and benchmarks).
struct WalWriteVfsStats {
    long long writes_received = 0;
    long long writes_issued = 0;
};
WalWriteVfsStats GetWalWriteVfsStats();

}  // namespace tally::sqlite
