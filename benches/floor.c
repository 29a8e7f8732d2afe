/*
 * floor: the least work any label scanner must do, to time `isomgr scan` against.
 *
 * Walks each PATH (a file or a directory, recursively, not following symlinks) with
 * opendir/readdir and, for every regular file, does open + pread(2048 bytes at offset 32768,
 * where an ISO9660 primary volume descriptor sits) + close. Nothing is parsed or printed
 * per file: one thread, no stat where readdir gives the type, openat relative to the open
 * directory. A real scanner also stats, parses and prints, so it can only match this by
 * reading in parallel.
 *
 * Usage: floor PATH...   prints "files=N short=M" (M = files shorter than 34 KiB) to stderr
 * with -v. Exit 0, or 1 with a message naming the path if anything cannot be read.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { PVD_OFFSET = 32768, PVD_LEN = 2048, MAX_DEPTH = 64 };

static unsigned long files, short_files;
static int failed;

static void fail(const char *what, const char *path, const char *name)
{
	/* path is NULL for a file named on the command line */
	fprintf(stderr, "floor: %s %s%s%s: %s\n", what, path ? path : "", path && name ? "/" : "",
		name ? name : "", strerror(errno));
	failed = 1;
}

static void read_one(int dirfd, const char *dirpath, const char *name)
{
	char buf[PVD_LEN];
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		fail("opening", dirpath, name);
		return;
	}
	ssize_t n = pread(fd, buf, sizeof buf, PVD_OFFSET);
	if (n < 0)
		fail("reading", dirpath, name);
	else if (n < PVD_LEN)
		short_files++;
	files++;
	close(fd);
}

static void walk(int dirfd, const char *path, int depth)
{
	if (depth > MAX_DEPTH) {
		errno = ELOOP;
		fail("walking", path, NULL);
		return;
	}
	DIR *d = fdopendir(dirfd);
	if (!d) {
		fail("opening directory", path, NULL);
		close(dirfd);
		return;
	}
	struct dirent *e;
	while ((errno = 0, e = readdir(d)) != NULL) {
		const char *name = e->d_name;
		if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)))
			continue;
		unsigned char type = e->d_type;
		if (type == DT_UNKNOWN) {
			struct stat st;
			if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
				fail("stat", path, name);
				continue;
			}
			type = S_ISREG(st.st_mode) ? DT_REG : S_ISDIR(st.st_mode) ? DT_DIR : DT_LNK;
		}
		if (type == DT_REG) {
			read_one(dirfd, path, name);
		} else if (type == DT_DIR) {
			int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
			if (sub < 0) {
				fail("opening directory", path, name);
				continue;
			}
			char subpath[4096];
			snprintf(subpath, sizeof subpath, "%s/%s", path, name);
			walk(sub, subpath, depth + 1);
		}
	}
	if (errno)
		fail("reading directory", path, NULL);
	closedir(d); /* closes dirfd */
}

int main(int argc, char **argv)
{
	int verbose = 0, i = 1;
	if (i < argc && strcmp(argv[i], "-v") == 0) {
		verbose = 1;
		i++;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: floor [-v] PATH...\n");
		return 2;
	}
	for (; i < argc; i++) {
		struct stat st;
		if (lstat(argv[i], &st) < 0) {
			fail("stat", argv[i], NULL);
		} else if (S_ISDIR(st.st_mode)) {
			int fd = open(argv[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (fd < 0)
				fail("opening directory", argv[i], NULL);
			else
				walk(fd, argv[i], 0);
		} else if (S_ISREG(st.st_mode)) {
			read_one(AT_FDCWD, NULL, argv[i]);
		}
	}
	if (verbose)
		fprintf(stderr, "files=%lu short=%lu\n", files, short_files);
	return failed;
}
