// Crash-safe file writing, shared by the run directory (checkpoints, JSON, metrics) and the
// model-file writer; no torch. A whole file is written to PATH.tmp, flushed to disk (fsync),
// renamed over PATH and the rename made durable (fsync of the folder): a kill or a power cut
// leaves either the previous file or the new one, never half of one. Processes writing one PATH
// at once (data-parallel workers filling a shared cache) take turns on PATH.tmp under a lock. A write that fails (no
// space, a file-size limit, an I/O error) removes the temporary file, keeps the previous PATH
// and throws a UserError naming PATH and the reason.
#pragma once
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/error.h"

namespace shrink {
namespace file_io {

// The reason for a failed write, in words a user acts on.
inline std::string describe_errno(int err) {
  switch (err) {
    case ENOSPC: return "no space left on device";
    case EDQUOT: return "disk quota exceeded (no space left for this user)";
    case EFBIG: return "file too large (over the file-size limit, see ulimit -f)";
    default: return std::strerror(err);
  }
}

inline std::string folder_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Writes all of [data, data + size) to fd; returns 0 or the errno of the failure.
inline int write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

// Makes a rename or a new file in `folder` durable. Some file systems refuse fsync on a
// folder (EINVAL): nothing more can be done there.
inline int sync_folder(const std::string& folder) {
  int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = ::fsync(fd) == 0 || errno == EINVAL || errno == EROFS ? 0 : errno;
  ::close(fd);
  return err;
}

inline int close_with(int fd, int err) {
  ::close(fd);
  errno = err;
  return -1;
}

// Opens `tmp` for writing, emptied, holding an exclusive lock on it until it is closed: a second
// writer of the same file waits instead of truncating the first's bytes. A lock won after the
// holder renamed the file away is on the file it became: open again. Where the file system has no
// locks, none. -1 with errno on failure.
inline int open_locked(const std::string& tmp) {
  for (;;) {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    int lock_err = 0;
    while (::flock(fd, LOCK_EX) != 0)
      if (errno != EINTR) {
        lock_err = errno;
        break;
      }
    if (lock_err != 0 && lock_err != ENOLCK && lock_err != EOPNOTSUPP) return close_with(fd, lock_err);
    struct stat held, named;
    if (::fstat(fd, &held) == 0 && ::stat(tmp.c_str(), &named) == 0 && held.st_ino == named.st_ino && held.st_dev == named.st_dev)
      return ::ftruncate(fd, 0) == 0 ? fd : close_with(fd, errno);
    ::close(fd);
  }
}

}  // namespace file_io

// Replaces `path` with `content` atomically and durably (see above).
inline void write_file_atomic(const std::string& path, const void* content, size_t size) {
  const std::string tmp = path + ".tmp";
  struct stat st;
  const bool existed = ::stat(path.c_str(), &st) == 0;
  const int fd = file_io::open_locked(tmp);
  if (fd < 0) throw UserError("cannot write " + path + ": cannot create " + tmp + ": " + file_io::describe_errno(errno));
  auto fail = [&](int err) {
    ::unlink(tmp.c_str());
    ::close(fd);
    throw UserError("cannot write " + path + ": " + file_io::describe_errno(err) +
                    (existed ? "; the previous " + path.substr(path.find_last_of('/') + 1) + " is kept" : ""));
  };
  int err = file_io::write_all(fd, static_cast<const char*>(content), size);
  if (!err && ::fsync(fd) != 0) err = errno;
  if (err) fail(err);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail(errno);
  ::close(fd);  // after the rename: the lock keeps another writer off the file until it is PATH (synced: nothing left to fail)
  if (int e = file_io::sync_folder(file_io::folder_of(path))) throw UserError("cannot write " + path + ": " + file_io::describe_errno(e));
}

inline void write_file_atomic(const std::string& path, const std::string& content) { write_file_atomic(path, content.data(), content.size()); }

// Appends one whole line (a '\n' is added) to an append-only file such as metrics.jsonl, in a
// single write, and flushes it to disk. When a crash left the file ending in a cut line, that
// line is first ended, so the new record starts on a line of its own (readers skip the cut one).
inline void append_line(const std::string& path, const std::string& line) {
  int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw UserError("cannot write " + path + ": " + file_io::describe_errno(errno));
  std::string text = line + "\n";
  struct stat st;
  char last = '\n';
  if (::fstat(fd, &st) == 0 && st.st_size > 0 && ::pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n') text.insert(0, "\n");
  int err = file_io::write_all(fd, text.data(), text.size());
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (err) throw UserError("cannot write " + path + ": " + file_io::describe_errno(err));
}

}  // namespace shrink
