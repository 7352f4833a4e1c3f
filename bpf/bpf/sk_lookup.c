// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Per-pod traffic capture (design (a)): an sk_lookup program attached to one
// pod's network namespace steers new TCP connections to the node proxy's
// listeners, which live inside that namespace and are kept in `socks`.
//
//   outbound: generated in the pod (arrives on lo), destination is neither
//             the pod IP nor 127/8                    -> socks[0] (15001)
//   HBONE in: arrived from outside to the pod IP, port 15008 -> socks[2] (15008)
//   inbound:  arrived from outside to the pod IP, any other port
//                                                     -> socks[1] (15006)
//   anything else                                     -> normal lookup
//
// A missing socket means the proxy is not (yet) there: drop when the pod is
// fail-closed (the client's SYN retry covers proxy start-up), else pass.
//
// Only UAPI headers are used (linux/bpf.h from linux-libc-dev, bpf_helpers.h
// from libbpf-dev), so no vmlinux.h and no bpftool are needed to build.
// `ingress_ifindex` needs kernel >= 5.17; older kernels reject the load.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define IPPROTO_TCP 6
#define LOOPBACK_IFINDEX 1
#define HBONE_PORT 15008

// Keys of `socks`; the loader's `SockSlot` mirrors them.
#define SOCK_OUTBOUND 0
#define SOCK_INBOUND 1
#define SOCK_HBONE 2

// Keys of `stats`; the loader's `Counter` mirrors them.
enum counter {
	STAT_OUTBOUND_ASSIGNED = 0,
	STAT_INBOUND_ASSIGNED = 1,
	STAT_PASSED = 2,           // not ours: left to the normal lookup
	STAT_NO_SOCKET_DROPPED = 3, // proxy socket missing, fail-closed
	STAT_NO_SOCKET_PASSED = 4,  // proxy socket missing, fail-open
	STAT_COUNT = 5,
};

// Layout shared with the loader's `#[repr(C)] PodConfig`.
struct pod_config {
	__u32 pod_ip4;     // network byte order
	__u32 enabled;     // 0: pass everything
	__u32 fail_closed; // 1: drop when the proxy socket is missing
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pod_config);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u32);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 key)
{
	__u64 *value = bpf_map_lookup_elem(&stats, &key);

	if (value)
		__sync_fetch_and_add(value, 1);
}

static __always_inline int pass(void)
{
	count(STAT_PASSED);
	return SK_PASS;
}

static __always_inline int steer(struct bpf_sk_lookup *ctx, __u32 slot,
				 __u32 fail_closed)
{
	struct bpf_sock *sk;
	long err;

	sk = bpf_map_lookup_elem(&socks, &slot);
	if (!sk)
		goto missing;
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	// A socket of the wrong type or state cannot take the connection:
	// treat it as missing so the verdict follows fail_closed.
	if (err)
		goto missing;
	count(slot == SOCK_OUTBOUND ? STAT_OUTBOUND_ASSIGNED :
				      STAT_INBOUND_ASSIGNED);
	return SK_PASS;

missing:
	if (fail_closed) {
		count(STAT_NO_SOCKET_DROPPED);
		return SK_DROP;
	}
	count(STAT_NO_SOCKET_PASSED);
	return SK_PASS;
}

SEC("sk_lookup")
int pod_capture(struct bpf_sk_lookup *ctx)
{
	const __u32 zero = 0;
	struct pod_config *c;
	__u32 dst;

	if (ctx->family != AF_INET || ctx->protocol != IPPROTO_TCP)
		return SK_PASS;

	c = bpf_map_lookup_elem(&cfg, &zero);
	if (!c || !c->enabled)
		return pass();

	dst = ctx->local_ip4;
	if (ctx->ingress_ifindex == LOOPBACK_IFINDEX) {
		// Generated inside the pod. Pod-local destinations include the
		// proxy's own leg to the app, which must not be captured again.
		if (dst == c->pod_ip4 ||
		    (bpf_ntohl(dst) >> 24) == 127)
			return pass();
		return steer(ctx, SOCK_OUTBOUND, c->fail_closed);
	}

	if (dst != c->pod_ip4)
		return pass();
	// The HBONE port is steered too, so that while the proxy restarts a
	// peer's tunnel waits (fail-closed) instead of being refused.
	return steer(ctx, ctx->local_port == HBONE_PORT ? SOCK_HBONE :
							  SOCK_INBOUND,
		     c->fail_closed);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
