/*
 * libFuzzer harness for subnets_parse(): any bytes as an allowed-subnets
 * file. It asserts properties and aborts on the first one broken:
 *  - a failed parse leaves the table empty (fail closed) and names a line
 *    that exists, with a reason and printable quoted text;
 *  - a successful parse holds at least one entry, each of a known family,
 *    with a prefix within the family's width and no bit set past it;
 *  - each entry's network address matches the table (an IPv4 one also as
 *    its IPv4-mapped IPv6 form);
 *  - the warning callback fires only for lines that exist.
 * tests/fuzz/replay_main.c runs this over the kept corpus in `make test`.
 */
#include "subnets.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "fuzz_subnets:%d: property broken: "  \
					"%s\n",                                \
				__LINE__, #cond);                              \
			abort();                                               \
		}                                                              \
	} while (0)

static size_t count_lines(const uint8_t *data, size_t size)
{
	size_t lines = 1;

	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	return lines;
}

static void check_warning(void *context, size_t line, const char *text,
			  const char *reason)
{
	size_t lines = *(const size_t *)context;

	CHECK(line >= 1 && line <= lines);
	CHECK(text != NULL && reason != NULL && reason[0] != '\0');
}

static void check_printable(const char *text, size_t capacity)
{
	size_t len = strnlen(text, capacity);

	CHECK(len < capacity);
	for (size_t i = 0; i < len; i++)
		CHECK(text[i] >= 0x20 && text[i] < 0x7f);
}

static void check_failure(const struct subnets *table,
			  const struct subnets_error *error, size_t lines)
{
	CHECK(table->entries == NULL && table->count == 0);
	CHECK(error->line <= lines);
	CHECK(error->reason[0] != '\0');
	check_printable(error->reason, sizeof error->reason);
	check_printable(error->text, sizeof error->text);
}

/* No bit of addr is set past prefix_len. */
static int host_bits_clear(const uint8_t *addr, size_t width_bytes,
			   unsigned prefix_len)
{
	for (size_t bit = prefix_len; bit < width_bytes * 8; bit++)
		if (addr[bit / 8] & (0x80 >> (bit % 8)))
			return 0;
	return 1;
}

static void check_entry_matches(const struct subnets *table,
				const struct subnet *entry)
{
	struct sockaddr_storage storage;

	memset(&storage, 0, sizeof storage);
	if (entry->family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&storage;
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, entry->addr, 4);
		CHECK(subnets_contains(table, (struct sockaddr *)in));
		struct sockaddr_in6 mapped = {.sin6_family = AF_INET6};
		mapped.sin6_addr.s6_addr[10] = 0xff;
		mapped.sin6_addr.s6_addr[11] = 0xff;
		memcpy(&mapped.sin6_addr.s6_addr[12], entry->addr, 4);
		CHECK(subnets_contains(table, (struct sockaddr *)&mapped));
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&storage;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, entry->addr, 16);
		CHECK(subnets_contains(table, (struct sockaddr *)in6));
	}
}

static void check_success(const struct subnets *table)
{
	CHECK(table->count >= 1 && table->entries != NULL);
	for (size_t i = 0; i < table->count; i++) {
		const struct subnet *entry = &table->entries[i];
		CHECK(entry->family == AF_INET || entry->family == AF_INET6);
		size_t width = entry->family == AF_INET ? 4 : 16;
		CHECK(entry->prefix_len <= width * 8);
		CHECK(host_bits_clear(entry->addr, width, entry->prefix_len));
		check_entry_matches(table, entry);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A heap copy of exactly the input: ASan sees any read past it. */
	char *text = malloc(size ? size : 1);
	struct subnets table = {0};
	struct subnets_error error;
	size_t lines = count_lines(data, size);

	if (text == NULL)
		abort();
	memcpy(text, data, size);
	int result = subnets_parse(text, size, &table, &error, check_warning,
				   &lines);
	CHECK(result == 0 || result == -1);
	if (result == 0)
		check_success(&table);
	else
		check_failure(&table, &error, lines);
	subnets_free(&table);
	free(text);
	return 0;
}
