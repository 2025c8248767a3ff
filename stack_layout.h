/*
 * stack_layout: how an idle connection's process stays at two pages, in one
 * place, with its reason. Included by the files whose frames it arranges
 * (listener.c, connection.c, relay.c); holds nothing else.
 *
 * An idle connection's memory is mostly stack pages: those its process
 * writes, and those the accept loop writes after the fork, whose original
 * then belongs to the child alone. Both write just below the accept loop's
 * frame: the loop, accept and fork, and in the child the phases of a
 * connection, about 3.5 KiB together. Two tricks keep all of it in one
 * page, so that a connection costs that stack page and its copy of libc's
 * data (tests/300-robustness.bats checks the two pages):
 *
 * 1. The phases of a connection (header, connect, relay) are kept out of
 *    line (CONNECTION_PHASE), so that their frames share one stretch of
 *    stack instead of adding up. They sit in different files, which keeps
 *    them apart already; the attribute keeps a -flto build honest too.
 *    Their buffers stay small for the same reason: 640 bytes for the header
 *    (a bigger one goes to the heap), 1 KiB per relay direction.
 *
 * 2. The accept loop's frame starts near the top of a page
 *    (STACK_ALIGN_FOR_ACCEPT_LOOP in the function that calls the loop, which
 *    must then be out of line), so that the 3.5 KiB below it fit in that
 *    page, where a frame starting anywhere would straddle two or three.
 *
 * The stack is usually stack_move.h's, just below the heap, not the one the
 * kernel set up; the alignment is worked out from a frame's address, so it
 * holds on either.
 *
 * Both depend on the compiler's frame layout, which no standard promises:
 * the two-page test is what guards them. Two more habits in listener.c
 * serve the same end and are explained where they are: the fork is
 * _Fork(), whose child writes no libc page, and the loop counts children
 * in a copy of its state in its own frame, never in a page it shares with
 * a child.
 */
#ifndef STACK_LAYOUT_H
#define STACK_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define CONNECTION_PHASE __attribute__((noinline))

#define STACK_PAGE 4096
#define STACK_ROOM_WANTED 4080

/*
 * Moves the stack pointer so that the next call's frame starts
 * STACK_ROOM_WANTED bytes above a page boundary. alloca, so the stack
 * pointer stays moved until the calling function returns.
 */
#define STACK_ALIGN_FOR_ACCEPT_LOOP()                                          \
	do {                                                                   \
		char stack_here;                                               \
		size_t stack_padding = ((uintptr_t)&stack_here + STACK_PAGE -  \
					STACK_ROOM_WANTED) %                   \
				       STACK_PAGE;                             \
		char *stack_pad = __builtin_alloca(stack_padding + 1);         \
		__asm__ volatile("" : : "r"(stack_pad) : "memory");            \
	} while (0)

#endif
