/* A character backend for a serial port: standard I/O (raw terminal while attached, Ctrl-A x
 * quits), a file (output only) or a pseudo-terminal. Input arrives on the backend's own thread
 * and is handed to the device through the receive callback. */
#ifndef FERRY_CHARDEV_H
#define FERRY_CHARDEV_H

#include <stddef.h>
#include <stdint.h>

struct chardev;

/* Called with received bytes on the input thread. Returns how many it took; the backend keeps
 * the rest and retries after chardev_accept_input(). */
typedef size_t (*chardev_receive_fn)(void *opaque, const uint8_t *buf, size_t len);
/* Called when the user asks to quit (Ctrl-A x on stdio). */
typedef void (*chardev_quit_fn)(void *opaque);

/* spec: "stdio", "file:PATH", "pty", "none". Returns NULL with a line in err. */
struct chardev *chardev_open(const char *spec, char *err, size_t err_len);
void chardev_close(struct chardev *c); /* restores the terminal */
void chardev_set_handlers(struct chardev *c, chardev_receive_fn rx, chardev_quit_fn quit,
			  void *opaque);
/* Starts the input thread (if the backend has input). */
int chardev_start(struct chardev *c);
void chardev_write(struct chardev *c, const uint8_t *buf, size_t len);
/* The device can take input again (its receive buffer drained). */
void chardev_accept_input(struct chardev *c);
/* Restore every terminal ferry put into raw mode; safe from a signal handler. */
void chardev_restore_terminals(void);

#endif
