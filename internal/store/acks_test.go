package store

import (
	"testing"
	"time"
)

func TestReplicationInfo(t *testing.T) {
	for _, tc := range []struct {
		name, info string
		replid     string
		online     int
	}{
		{"primary with two replicas, one syncing", "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n" +
			"slave0:ip=127.0.0.1,port=7001,state=online,offset=100,lag=0\r\n" +
			"slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n" +
			"master_replid:abc123\r\nmaster_repl_offset:100\r\n", "abc123", 1},
		{"primary alone", "role:master\r\nconnected_slaves:0\r\nmaster_replid:def\r\n", "def", 0},
		{"a replica answers: no primary id", "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_replid:abc123\r\n", "", 0},
		{"slave_read_only is not a replica line", "role:master\r\nslave_read_only:1\r\nmaster_replid:x\r\n", "x", 0},
	} {
		replid, online := replicationInfo(tc.info)
		if replid != tc.replid || online != tc.online {
			t.Errorf("%s: = %q, %d; want %q, %d", tc.name, replid, online, tc.replid, tc.online)
		}
	}
}

// TestAcksRemember: a primary seen with two replicas keeps needing two
// while one is away (a switchover takes it), and a promoted replica (a new
// replication id) starts from what it has.
func TestAcksRemember(t *testing.T) {
	var a acks
	if n := a.observe("p1", 2); n != 2 {
		t.Fatalf("p1 with 2 replicas needs %d, want 2", n)
	}
	if n := a.observe("p1", 1); n != 2 {
		t.Errorf("p1 down to 1 replica needs %d, want still 2 (within %s)", n, replicaForget)
	}
	if n := a.observe("p2", 1); n != 1 || a.want() != 1 {
		t.Errorf("the promoted p2 with 1 replica needs %d (want() %d), want 1", n, a.want())
	}
	a.seen["p1"].at = time.Now().Add(-2 * replicaForget)
	if n := a.observe("p1", 1); n != 1 {
		t.Errorf("p1 with 1 replica for longer than %s needs %d, want 1", replicaForget, n)
	}
	if n := a.observe("p3", 0); n != 1 {
		t.Errorf("a primary with no replica needs %d, want at least 1", n)
	}
}

// TestSubjectPart: no two collection and id pairs share a key part.
func TestSubjectPart(t *testing.T) {
	for _, c := range []struct{ collection, id, want string }{
		{"users", "42", "users:42"},
		{"a:b", "c", "a%3Ab:c"},
		{"a", "b:c", "a:b:c"},
		{"a%3Ab", "c", "a%253Ab:c"},
	} {
		if got := subjectPart(c.collection, c.id); got != c.want {
			t.Errorf("subjectPart(%q, %q) = %q, want %q", c.collection, c.id, got, c.want)
		}
	}
}
