/* ferry's command line: options -> a vm_config -> create, run, and (on a guest reset) again. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/chardev.h"
#include "util/log.h"
#include "util/parse.h"
#include "vm/vm.h"

#ifndef FERRY_VERSION
#define FERRY_VERSION "0.1.0"
#endif

#define MEM_MIN (2ull << 20)
#define MEM_MAX (1ull << 40) /* 1 TiB: far beyond any host here, inside a 40-bit physical space */

static const char usage[] =
    "usage: ferry run --kernel FILE [options]   boot a kernel in a new virtual machine\n"
    "       ferry version                        print the version\n"
    "       ferry --help                         this text\n"
    "\n"
    "run options:\n"
    "  --kernel FILE        Linux bzImage, ELF with a PVH note, or multiboot kernel\n"
    "  --initrd FILE        initial ramdisk (a multiboot module for multiboot kernels)\n"
    "  --append STR         kernel command line\n"
    "  -m, --memory SIZE    guest RAM, e.g. 256M, 2G (default 256M; no suffix means MiB)\n"
    "  --smp N              number of vCPUs (default 1)\n"
    "  --engine E           kvm, soft or auto (default auto: kvm only where the host CPU\n"
    "                       has vmx or svm, soft otherwise)\n"
    "  --serial S           stdio (default), file:PATH, pty or none\n"
    "  --no-reboot          a guest reset ends ferry (status 0) instead of rebooting\n"
    "  --triple-fault A     stop (default: ferry exits with status 4 and the reason) or\n"
    "                       reset (as a PC does; with --no-reboot ferry then exits 0)\n"
    "  --linux-entry E      direct (default): decompress a Linux bzImage on the host and\n"
    "                       enter the kernel itself; decompressor: run its own decompressor\n"
    "  --drive file=PATH,format=raw|qcow2[,readonly=on]\n"
    "                       a virtio-blk disk on an image file (repeatable, up to 8; the\n"
    "                       format is never guessed; ',,' stands for a comma in PATH)\n"
    "  --rng                a virtio-rng device fed from the host's getrandom()\n"
    "  --net user[,hostfwd=tcp|udp:[HOSTADDR]:PORT-[GUESTADDR]:PORT][,mac=MAC]\n"
    "                       a virtio-net NIC on a user-mode NAT: the guest's network is\n"
    "                       10.0.2.0/24, gateway and host 10.0.2.2, DNS 10.0.2.3, DHCP from\n"
    "                       10.0.2.15; hostfwd (repeatable) forwards a host port inward\n"
    "  --net tap,ifname=NAME[,mac=MAC][,offload=on|off]\n"
    "                       a virtio-net NIC on a TAP interface (created if missing; needs\n"
    "                       CAP_NET_ADMIN); offload (default on) passes checksum and TSO\n"
    "                       offloads through. Repeatable, up to 4 NICs; MACs default to\n"
    "                       52:54:00:12:34:56, :57, ...\n"
    "  --console C          the device on the --serial backend: uart (default: the 16550A\n"
    "                       on COM1, Linux's ttyS0) or virtio (a virtio-console, Linux's\n"
    "                       hvc0: append console=hvc0; the UART then goes unconnected)\n"
    "  -v, --verbose        say more about what happens\n"
    "\n"
    "On the stdio console, Ctrl-A x quits and Ctrl-A h lists the other keys.\n"
    "Exit status: 0 guest powered off or quit, 1 host error, 2 bad usage or input,\n"
    "4 the VM stopped on a fault (triple fault, unmapped MMIO, unhandled exit),\n"
    "(v << 1) | 1 when the guest writes v to the exit port 0xf4.\n";

static int usage_error(const char *fmt, const char *arg)
{
	char msg[256];
	snprintf(msg, sizeof(msg), fmt, arg);
	log_error("%s (see ferry --help)", msg);
	return FERRY_EXIT_USAGE;
}

enum {
	OPT_KERNEL = 256,
	OPT_INITRD,
	OPT_APPEND,
	OPT_SMP,
	OPT_ENGINE,
	OPT_SERIAL,
	OPT_NO_REBOOT,
	OPT_LINUX_ENTRY,
	OPT_TRIPLE_FAULT,
	OPT_DRIVE,
	OPT_RNG,
	OPT_NET,
	OPT_CONSOLE,
};

/* Splits the next key=value item off a QEMU-style option string ("a=1,b=2"; ",," is a literal
 * comma). Rewrites s in place; *key and *val point into it. Returns 0 at the end, 1 with an
 * item, -1 for an item without '='. */
static int next_kv(char **s, char **key, char **val)
{
	char *p = *s;
	if (!p || !*p)
		return 0;
	char *w = p, *r = p;
	*key = p;
	*val = NULL;
	for (;;) {
		if (*r == ',' && r[1] == ',') {
			*w++ = ',';
			r += 2;
			continue;
		}
		if (*r == ',' || !*r) {
			*s = *r ? r + 1 : r;
			*w = 0;
			break;
		}
		if (*r == '=' && !*val) {
			*w++ = 0;
			*val = w;
			r++;
			continue;
		}
		*w++ = *r++;
	}
	return *val ? 1 : -1;
}

static int parse_onoff(const char *v, bool *out)
{
	if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes"))
		*out = true;
	else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no"))
		*out = false;
	else
		return -1;
	return 0;
}

/* --drive file=PATH,format=raw|qcow2[,readonly=on|off] */
static int parse_drive(char *arg, struct vm_config *cfg)
{
	if (cfg->ndrives == VM_MAX_DRIVES)
		return usage_error("too many --drive options (at most %s)", "8");
	struct vm_drive d = {.format = BLOCK_RAW};
	bool have_format = false;
	char *key, *val;
	int rc;
	while ((rc = next_kv(&arg, &key, &val)) != 0) {
		if (rc < 0)
			return usage_error("--drive: '%s' is not key=value", key);
		if (!strcmp(key, "file")) {
			d.file = val;
		} else if (!strcmp(key, "format")) {
			if (!strcmp(val, "raw"))
				d.format = BLOCK_RAW;
			else if (!strcmp(val, "qcow2"))
				d.format = BLOCK_QCOW2;
			else
				return usage_error(
				    "--drive: unknown format '%s' (use raw or qcow2)", val);
			have_format = true;
		} else if (!strcmp(key, "readonly")) {
			if (parse_onoff(val, &d.readonly) < 0)
				return usage_error("--drive: readonly=%s: use on or off", val);
		} else if (!strcmp(key, "if")) {
			if (strcmp(val, "virtio") != 0)
				return usage_error("--drive: if=%s: only virtio disks exist", val);
		} else {
			return usage_error("--drive: unknown key '%s' (file, format, readonly)",
					   key);
		}
	}
	if (!d.file || !*d.file)
		return usage_error("%s", "--drive needs file=PATH");
	if (!have_format)
		return usage_error("--drive %s: say format=raw or format=qcow2 (ferry does not "
				   "guess an image's format)",
				   d.file);
	cfg->drives[cfg->ndrives++] = d;
	return 0;
}

/* --net user[,hostfwd=...][,mac=MAC] or --net tap,ifname=NAME[,mac=MAC][,offload=on|off] */
static int parse_net(char *arg, struct vm_config *cfg)
{
	if (cfg->nnics == VM_MAX_NICS)
		return usage_error("too many --net options (at most %s)", "4");
	struct net_config *n = &cfg->nics[cfg->nnics];
	char err[200];
	*n = (struct net_config){.offload = true, .mac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56}};
	n->mac[5] = (uint8_t)(n->mac[5] + cfg->nnics);
	char *kind = arg, *comma = strchr(arg, ',');
	arg = comma ? comma + 1 : NULL;
	if (comma)
		*comma = 0;
	if (!strcmp(kind, "user"))
		n->kind = NET_USER;
	else if (!strcmp(kind, "tap"))
		n->kind = NET_TAP;
	else
		return usage_error("--net: unknown kind '%s' (use user or tap)", kind);
	char *key, *val;
	int rc;
	bool have_ifname = false;
	while ((rc = next_kv(&arg, &key, &val)) != 0) {
		if (rc < 0)
			return usage_error("--net: '%s' is not key=value", key);
		if (!strcmp(key, "mac")) {
			if (net_parse_mac(val, n->mac, err, sizeof(err)) < 0)
				return usage_error("--net: %s", err);
		} else if (n->kind == NET_USER && !strcmp(key, "hostfwd")) {
			if (n->nfwd == NET_MAX_HOSTFWD)
				return usage_error("--net: too many hostfwd= (at most %s)", "16");
			if (net_parse_hostfwd(val, &n->fwd[n->nfwd], err, sizeof(err)) < 0)
				return usage_error("--net: %s", err);
			n->nfwd++;
		} else if (n->kind == NET_TAP && !strcmp(key, "ifname")) {
			if (!net_ifname_ok(val))
				return usage_error("--net: ifname=%s is not an interface name "
						   "(1 to 15 characters, no '/', ':' or spaces)",
						   val);
			snprintf(n->ifname, sizeof(n->ifname), "%s", val);
			have_ifname = true;
		} else if (n->kind == NET_TAP && !strcmp(key, "offload")) {
			if (parse_onoff(val, &n->offload) < 0)
				return usage_error("--net: offload=%s: use on or off", val);
		} else {
			return usage_error(
			    n->kind == NET_TAP
				? "--net tap: unknown key '%s' (ifname, mac, offload)"
				: "--net user: unknown key '%s' (hostfwd, mac)",
			    key);
		}
	}
	if (n->kind == NET_TAP && !have_ifname)
		return usage_error("%s", "--net tap needs ifname=NAME");
	cfg->nnics++;
	return 0;
}

static int parse_run(int argc, char **argv, struct vm_config *cfg)
{
	static const struct option opts[] = {
	    {"kernel", required_argument, NULL, OPT_KERNEL},
	    {"initrd", required_argument, NULL, OPT_INITRD},
	    {"append", required_argument, NULL, OPT_APPEND},
	    {"memory", required_argument, NULL, 'm'},
	    {"smp", required_argument, NULL, OPT_SMP},
	    {"engine", required_argument, NULL, OPT_ENGINE},
	    {"serial", required_argument, NULL, OPT_SERIAL},
	    {"no-reboot", no_argument, NULL, OPT_NO_REBOOT},
	    {"linux-entry", required_argument, NULL, OPT_LINUX_ENTRY},
	    {"triple-fault", required_argument, NULL, OPT_TRIPLE_FAULT},
	    {"drive", required_argument, NULL, OPT_DRIVE},
	    {"rng", no_argument, NULL, OPT_RNG},
	    {"net", required_argument, NULL, OPT_NET},
	    {"console", required_argument, NULL, OPT_CONSOLE},
	    {"verbose", no_argument, NULL, 'v'},
	    {NULL, 0, NULL, 0},
	};
	*cfg = (struct vm_config){
	    .mem_size = 256ull << 20, .smp = 1, .serial = "stdio", .linux_direct = true};
	opterr = 0;
	optind = 1;
	int c;
	uint64_t n;
	while ((c = getopt_long(argc, argv, ":m:v", opts, NULL)) != -1) {
		switch (c) {
		case OPT_KERNEL:
			cfg->kernel = optarg;
			break;
		case OPT_INITRD:
			cfg->initrd = optarg;
			break;
		case OPT_APPEND:
			cfg->append = optarg;
			break;
		case 'm':
			if (parse_size(optarg, 'M', &n) < 0)
				return usage_error("bad memory size '%s' (use e.g. 256M or 2G)",
						   optarg);
			if (n < MEM_MIN || n > MEM_MAX || n % PAGE_SIZE)
				return usage_error("memory size '%s' is impossible: it must be a "
						   "multiple of 4 KiB from 2 MiB to 1 TiB",
						   optarg);
			cfg->mem_size = n;
			break;
		case OPT_SMP:
			if (parse_uint(optarg, &n) < 0 || n < 1 || n > VM_MAX_VCPUS)
				return usage_error("bad vCPU count '%s' (1 to 64)", optarg);
			cfg->smp = (unsigned)n;
			break;
		case OPT_ENGINE:
			if (!strcmp(optarg, "kvm"))
				cfg->engine = ENGINE_KVM;
			else if (!strcmp(optarg, "soft"))
				cfg->engine = ENGINE_SOFT;
			else if (!strcmp(optarg, "auto"))
				cfg->engine = ENGINE_AUTO;
			else
				return usage_error("unknown engine '%s' (use kvm, soft or auto)",
						   optarg);
			break;
		case OPT_SERIAL:
			cfg->serial = optarg;
			break;
		case OPT_NO_REBOOT:
			cfg->no_reboot = true;
			break;
		case OPT_TRIPLE_FAULT:
			if (!strcmp(optarg, "stop"))
				cfg->triple_fault_reset = false;
			else if (!strcmp(optarg, "reset"))
				cfg->triple_fault_reset = true;
			else
				return usage_error(
				    "unknown triple-fault action '%s' (use stop or reset)", optarg);
			break;
		case OPT_LINUX_ENTRY:
			if (!strcmp(optarg, "direct"))
				cfg->linux_direct = true;
			else if (!strcmp(optarg, "decompressor"))
				cfg->linux_direct = false;
			else
				return usage_error(
				    "unknown Linux entry '%s' (use direct or decompressor)",
				    optarg);
			break;
		case OPT_DRIVE:
			if (parse_drive(optarg, cfg) != 0)
				return FERRY_EXIT_USAGE;
			break;
		case OPT_NET:
			if (parse_net(optarg, cfg) != 0)
				return FERRY_EXIT_USAGE;
			break;
		case OPT_RNG:
			cfg->rng = true;
			break;
		case OPT_CONSOLE:
			if (!strcmp(optarg, "uart"))
				cfg->virtio_console = false;
			else if (!strcmp(optarg, "virtio"))
				cfg->virtio_console = true;
			else
				return usage_error("unknown console '%s' (use uart or virtio)",
						   optarg);
			break;
		case 'v':
			log_verbose = 1;
			break;
		case ':':
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!cfg->kernel)
		return usage_error("%s", "ferry run needs --kernel FILE");
	return 0;
}

/* ---- signals: a dedicated thread turns SIGINT/SIGTERM/SIGHUP into a VM stop -------------- */

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vm *current_vm;
static sigset_t stop_signals;

static void *signal_thread(void *arg)
{
	(void)arg;
	for (;;) {
		int sig;
		if (sigwait(&stop_signals, &sig) != 0)
			continue;
		if (sig == SIGUSR2) /* main is done */
			return NULL;
		pthread_mutex_lock(&current_lock);
		if (current_vm)
			vm_stop(current_vm, VM_STOP_USER, 128 + sig, "stopped by signal %d (%s)",
				sig, strsignal(sig));
		pthread_mutex_unlock(&current_lock);
	}
}

static void fatal_signal(int sig)
{
	chardev_restore_terminals();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void setup_signals(void)
{
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = fatal_signal};
	sigemptyset(&sa.sa_mask);
	int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
	for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
		sigaction(fatal[i], &sa, NULL);
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGHUP);
	sigaddset(&stop_signals, SIGUSR2);
	/* Blocked here, before any thread exists, so every thread inherits the mask. */
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
}

/* Runs the VM, rebooting it on a guest reset unless told not to. Returns the exit status. */
static int run_vm(struct vm_config *cfg, const struct engine_ops *engine)
{
	for (;;) {
		int status;
		struct vm *vm = vm_create(cfg, engine, &status);
		if (!vm)
			return status;
		pthread_mutex_lock(&current_lock);
		current_vm = vm;
		pthread_mutex_unlock(&current_lock);

		enum vm_stop_reason why = vm_run(vm);
		status = vm->exit_status;
		switch (why) {
		case VM_STOP_ERROR:
			log_error("%s", vm->stop_msg);
			break;
		case VM_STOP_RESET:
			status = 0;
			log_info("%s", vm->stop_msg);
			break;
		default:
			log_info("%s", vm->stop_msg);
			break;
		}
		pthread_mutex_lock(&current_lock);
		current_vm = NULL;
		pthread_mutex_unlock(&current_lock);
		vm_destroy(vm);
		if (why == VM_STOP_RESET && !cfg->no_reboot) {
			log_info("rebooting");
			continue;
		}
		return status;
	}
}

static int cmd_run(int argc, char **argv)
{
	struct vm_config cfg;
	char err[256];
	int rc = parse_run(argc, argv, &cfg);
	if (rc)
		return rc;
	/* Usage and input errors come first, whatever the host: the serial spec here, the kernel
	 * and initrd files in vm_create before the engine opens anything. */
	cfg.serial_dev = chardev_open(cfg.serial, err, sizeof(err));
	if (!cfg.serial_dev) {
		log_error("%s", err);
		return FERRY_EXIT_USAGE;
	}
	const struct engine_ops *engine = engine_select(cfg.engine, err, sizeof(err));
	if (!engine) {
		log_error("%s", err);
		chardev_close(cfg.serial_dev);
		return FERRY_EXIT_HOST;
	}
	setup_signals();
	pthread_t sig_thread;
	pthread_create(&sig_thread, NULL, signal_thread, NULL);
	rc = run_vm(&cfg, engine);
	pthread_kill(sig_thread, SIGUSR2);
	pthread_join(sig_thread, NULL);
	chardev_close(cfg.serial_dev);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage, stderr);
		return FERRY_EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("ferry %s\n", FERRY_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "run"))
		return cmd_run(argc - 1, argv + 1);
	return usage_error("unknown command '%s'", cmd);
}
