// Crash-safe file writing, shared by the run directory (checkpoints, JSON, metrics) and the
// model-file writer; no torch. A whole file is written to PATH.tmp, flushed to disk (fsync),
// renamed over PATH and the rename made durable (fsync of the folder): a kill or a power cut
// leaves either the previous file or the new one, never half of one. Processes writing one PATH
// at once (data-parallel workers filling a shared cache) take turns, under a lock on PATH.lock. A write that fails (no
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

// An exclusive lock on the file `lock` (created when missing), held until the returned fd is
// closed; -1 where the file system has no locks or the lock file keeps changing. A lock won after
// the holder unlinked the file is on a file no one else will lock: open it again.
inline int lock_file(const std::string& lock) {
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    int locked;
    do locked = ::flock(fd, LOCK_EX);
    while (locked != 0 && errno == EINTR);
    struct stat held, named;
    if (locked != 0) {
      ::close(fd);
      return -1;
    }
    if (::fstat(fd, &held) == 0 && ::stat(lock.c_str(), &named) == 0 && held.st_ino == named.st_ino && held.st_dev == named.st_dev) return fd;
    ::close(fd);
  }
  return -1;
}

}  // namespace file_io

// Replaces `path` with `content` atomically and durably (see above).
inline void write_file_atomic(const std::string& path, const void* content, size_t size) {
  const std::string tmp = path + ".tmp", lock = path + ".lock";
  struct stat st;
  const bool existed = ::stat(path.c_str(), &st) == 0;
  // Writers of one path take turns on PATH.lock (never renamed, so no reader of PATH meets the
  // lock); the holder unlinks it when done.
  const int lock_fd = file_io::lock_file(lock);
  auto unlock = [&] {
    if (lock_fd >= 0) ::unlink(lock.c_str()), ::close(lock_fd);
  };
  auto fail = [&](int err) {
    ::unlink(tmp.c_str());
    unlock();
    throw UserError("cannot write " + path + ": " + file_io::describe_errno(err) +
                    (existed ? "; the previous " + path.substr(path.find_last_of('/') + 1) + " is kept" : ""));
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    unlock();
    throw UserError("cannot write " + path + ": cannot create " + tmp + ": " + file_io::describe_errno(err));
  }
  int err = file_io::write_all(fd, static_cast<const char*>(content), size);
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (err) fail(err);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail(errno);
  unlock();
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
