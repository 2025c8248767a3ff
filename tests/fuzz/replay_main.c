/*
 * Replays fuzz inputs without libFuzzer: calls LLVMFuzzerTestOneInput() on
 * every regular file in the directories (or files) named on the command
 * line, so `make test` checks the kept corpus with any C compiler. The
 * harness aborts on a broken property; this exits 1 if an input cannot be
 * read or no input was found.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Run one file through the harness in a buffer of exactly its size, so ASan
 * sees a read past the input; 0 on success, -1 if unreadable.
 */
static int replay_file(const char *path, size_t size)
{
	FILE *file = fopen(path, "rb");
	uint8_t *data = malloc(size ? size : 1);

	if (!data) {
		fprintf(stderr, "replay: out of memory\n");
		exit(1);
	}
	if (!file || fread(data, 1, size, file) != size) {
		fprintf(stderr, "replay: %s: %s\n", path,
			file ? "short read" : strerror(errno));
		if (file)
			fclose(file);
		free(data);
		return -1;
	}
	fclose(file);
	LLVMFuzzerTestOneInput(data, size);
	free(data);
	return 0;
}

/* Replay a file, or each regular file in a directory; counts in *count. */
static int replay_path(const char *path, size_t *count)
{
	struct stat st;
	DIR *dir;
	struct dirent *entry;
	int failed = 0;

	if (stat(path, &st) != 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		(*count)++;
		return replay_file(path, (size_t)st.st_size);
	}
	dir = opendir(path);
	if (!dir) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((entry = readdir(dir)) != NULL) {
		char file_path[4096];

		if (entry->d_name[0] == '.')
			continue;
		snprintf(file_path, sizeof(file_path), "%s/%s", path,
			 entry->d_name);
		if (stat(file_path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		(*count)++;
		if (replay_file(file_path, (size_t)st.st_size) != 0)
			failed = 1;
	}
	closedir(dir);
	return failed ? -1 : 0;
}

int main(int argc, char **argv)
{
	size_t count = 0;
	int failed = 0, i;

	if (argc < 2) {
		fprintf(stderr, "usage: replay_proxyhdr DIR|FILE...\n");
		return 2;
	}
	for (i = 1; i < argc; i++)
		if (replay_path(argv[i], &count) != 0)
			failed = 1;
	printf("replayed %zu inputs\n", count);
	return failed || count == 0 ? 1 : 0;
}
