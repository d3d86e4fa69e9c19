package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/redistest"
)

// TestRewriteAlarmThroughServe is the README's rewrite row through serve on
// a real redis-server: an attacker deletes the checkpoints, the seal and the
// audit stream and appends every event but one again. The running instance
// raises its alarm (metric 1, GET /v1/audit/verify 409 naming the missing
// checkpoint, audit verify with the witness file exits 3); the alarm stays
// up for three more intervals, and only `impersonator audit accept` lowers
// it.
func TestRewriteAlarmThroughServe(t *testing.T) {
	const admin = "witness-admin-token-0123456789abcdefghijklmnop"
	srv := redistest.StartServer(t)
	keysDir := filepath.Join(t.TempDir(), "keys")
	witness := filepath.Join(t.TempDir(), "witness.jsonl")
	vars := map[string]string{
		"REDIS_URL":                        srv.URL(),
		"IMPERSONATOR_KEYS_DIR":            keysDir,
		"FOREST_AUTH_SECRET":               forestSecret,
		"IMPERSONATOR_ADMIN_TOKENS":        admin,
		"IMPERSONATOR_CHECKPOINT_INTERVAL": "1s",
		"IMPERSONATOR_AUDIT_WITNESS":       witness,
	}
	if err := run(context.Background(), []string{"keys", "generate", "--dir", keysDir}, env(vars), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	base, logs := startServe(t, vars)
	get := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	alarm := func() string {
		_, body := get("/metrics")
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "impersonator_audit_integrity_alarm ") {
				return strings.TrimPrefix(l, "impersonator_audit_integrity_alarm ")
			}
		}
		t.Fatal("no impersonator_audit_integrity_alarm in /metrics")
		return ""
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s never happened\n%s", what, logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, id := range []string{"41", "42", "43"} {
		mint(t, base, id)
	}
	waitFor("a checkpoint over the 3 events in the witness file", func() bool {
		b, _ := os.ReadFile(witness)
		code, body := get("/v1/audit/verify")
		return bytes.Contains(b, []byte(`"checkpoint":{"seq":1`)) && code == 200 && strings.Contains(body, `"events_verified":3`)
	})

	// The rewrite.
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(srv.URL(), "redis://")})
	defer rdb.Close()
	stream := "{impersonator}:audit"
	msgs, err := rdb.XRange(ctx, stream, "-", "+").Result()
	if err != nil || len(msgs) != 3 {
		t.Fatalf("events = %d, %v", len(msgs), err)
	}
	if err := rdb.Del(ctx, stream, stream+":checkpoints", stream+":sealed").Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range append(msgs[:1:1], msgs[2:]...) {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: m.Values}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	waitFor("the alarm", func() bool { return alarm() == "1" })
	for i := range 3 {
		time.Sleep(time.Second) // one interval
		if a := alarm(); a != "1" {
			t.Fatalf("interval %d after the rewrite: alarm %s, want it to stay 1", i+1, a)
		}
		code, body := get("/v1/audit/verify")
		// The alarm names what this instance saw and lacks: the checkpoint
		// (seq 1 or 2: the events may have taken one checkpoint or two),
		// or the seal, when its check fell between the attacker's commands.
		if code != 409 || !strings.Contains(body, `"integrity_alarm":"`) || !strings.Contains(body, "which this instance saw") {
			t.Fatalf("interval %d: verify = %d %s; want 409 naming what it saw", i+1, code, body)
		}
	}
	if n := strings.Count(logs.String(), "AUDIT INTEGRITY ALARM"); n < 3 {
		t.Errorf("the alarm was logged %d times, want once an interval", n)
	}
	// The CLI: with the witness file (IMPERSONATOR_AUDIT_WITNESS) it is
	// tampering; without one, it says what it cannot see.
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"audit", "verify"}, env(vars), &out, &errOut); !errors.Is(err, errTampered) || !strings.Contains(out.String(), "not in Redis") {
		t.Errorf("audit verify with the witness file = %v\n%s", err, out.String())
	}
	noWitness := map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": keysDir}
	out.Reset()
	errOut.Reset()
	_ = run(ctx, []string{"audit", "verify"}, env(noWitness), &out, &errOut)
	if !strings.Contains(errOut.String(), "cannot be detected without one") {
		t.Errorf("audit verify without a witness says %q", errOut.String())
	}

	// Only an accept lowers it.
	out.Reset()
	if err := run(ctx, []string{"audit", "accept", "--statement", "INC-9: restored after the incident"}, env(vars), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	waitFor("the alarm lowered by the accept", func() bool { return alarm() == "0" })
	if code, body := get("/v1/audit/events?type=audit.accepted"); code != 200 || !strings.Contains(body, `"reason":"INC-9: restored after the incident"`) || !strings.Contains(body, `"id":"operator`) {
		t.Errorf("the accept's event = %d %s; want the statement, by the operator", code, body)
	}
	code, body := get("/v1/audit/verify")
	if code != 200 || !strings.Contains(body, `"ok":true`) || !strings.Contains(body, "INC-9") {
		b, _ := os.ReadFile(witness)
		t.Errorf("verify after the accept = %d %s; want ok, the accept listed\n%s", code, body, b)
	}
	b, _ := os.ReadFile(witness)
	if !bytes.Contains(b, []byte(`"cleared":{"statement":"INC-9`)) {
		t.Errorf("the witness file does not record the accept:\n%s", b)
	}
	// README: about 250 bytes a checkpoint.
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.HasPrefix(l, `{"checkpoint":`) && !strings.Contains(l, `"accepted"`) && (len(l) < 200 || len(l) > 300) {
			t.Errorf("a checkpoint line of %d bytes, want about 250: %s", len(l), l)
		}
	}
}

// TestWitnessFileMustBeWritable: serve refuses to start when it cannot
// append to IMPERSONATOR_AUDIT_WITNESS.
func TestWitnessFileMustBeWritable(t *testing.T) {
	vars := map[string]string{
		"IMPERSONATOR_KEYS_DIR":      filepath.Join(t.TempDir(), "keys"),
		"FOREST_AUTH_SECRET":         forestSecret,
		"IMPERSONATOR_LISTEN":        "127.0.0.1:0",
		"IMPERSONATOR_AUDIT_WITNESS": filepath.Join(t.TempDir(), "no-such-dir", "witness.jsonl"),
	}
	err := run(context.Background(), []string{"serve"}, env(vars), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "IMPERSONATOR_AUDIT_WITNESS") {
		t.Errorf("serve with an unwritable witness file = %v, want it refused", err)
	}
}
