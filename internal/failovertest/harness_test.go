package failovertest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/server"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
	"github.com/impersonator/impersonator/internal/token/tokentest"
)

// forestSecret is FOREST_AUTH_SECRET (at least 32 characters, 16 distinct).
const forestSecret = "failover-forest-secret-0123456789abcdefgh"

// Load shape. Each minter mints, pauses, and mints again on the other
// instance; each token it gets is redeemed redeemDelay later on the
// instance it was not minted on, as a browser following the webhook would.
const (
	minters     = 4
	mintPause   = 15 * time.Millisecond
	redeemDelay = time.Second
	warmUp      = 1500 * time.Millisecond // load before the failover
	coolDown    = 2 * time.Second         // load after the topology settles
	maxMints    = 4000                    // a bound on the load, whatever the timings
	loadLimit   = 30 * time.Second        // and on its duration
)

// scenario is one run: a topology, the store's replica acknowledgement, and
// how the primary goes away.
type scenario struct {
	replicas int
	ack      time.Duration // store.Options.ReplicaAck; 0: no WAIT (the control)
	kill     bool          // kill -9 the primary instead of SENTINEL FAILOVER
}

func (sc scenario) String() string {
	how := "SENTINEL FAILOVER"
	if sc.kill {
		how = "kill -9"
	}
	return fmt.Sprintf("%s, %d replica(s), ReplicaAck %s", how, sc.replicas, sc.ack)
}

// answer is one HTTP answer of the load.
type answer struct {
	redeem   bool // a login, else a mint
	instance int
	code     int // 0: no HTTP answer (a client error)
	err      string
	jti      string // the token's id, when known
	sid      string // the session's id, of a 200 login
	start    time.Time
	end      time.Time
}

// figures are what a run measured.
type figures struct {
	requests, ok, unavailable      int
	mintsOK, redeemsOK, redeems503 int
	// unexpected lists answers of the load that are neither 200 nor 503.
	unexpected []string
	// lostMinted: 200 mints without their minted event (by token id);
	// lostRedeemed: 200 logins without their redeemed event (by session id,
	// so that a replay's event cannot stand in for it).
	lostMinted, lostRedeemed int
	// doubles: tokens with two or more redeemed events, or whose replay
	// got 200; replayedOK: 200 logins whose replay after the failover did
	// not get 401.
	doubles, replayedOK int
	// orphanRedeemed: logins answered 503 whose redeemed event is in the
	// audit log anyway (the change was made, and kept, without its ack).
	orphanRedeemed int
	// early503 and late503: 503s answered before the failover, and after
	// the topology settled (a WAIT that timed out on a busy machine).
	early503, late503 int
	// replay503: replays answered 503 first (then retried).
	replay503 int
	// Seconds from the failover: the first and last 503, and the first 200
	// answered after the last 503 (recovery).
	first503, last503, recovered float64
	// settled: seconds from the failover until the old primary is a
	// replica of the new one.
	settled float64
	// lost lists a few lost tokens with the timing of their answers.
	lost []string
}

func (f figures) String() string {
	return fmt.Sprintf("requests %d (%d mints and %d logins answered 200), 200s %d, 503s %d, other answers %d, "+
		"double redemptions %d, lost minted events %d, lost redeemed events %d, replays not refused %d, "+
		"redeemed events of 503 logins %d, 503s before the failover %d, 503s after the topology settled %d, replays retried after a 503 %d; "+
		"from the failover: first 503 %.2fs, last 503 %.2fs, first 200 after it %.2fs, topology settled %.2fs",
		f.requests, f.mintsOK, f.redeemsOK, f.ok, f.unavailable, len(f.unexpected),
		f.doubles, f.lostMinted, f.lostRedeemed, f.replayedOK,
		f.orphanRedeemed, f.early503, f.late503, f.replay503, f.first503, f.last503, f.recovered, f.settled)
}

// deployment is two instances of the service on one Sentinel-managed Redis.
type deployment struct {
	t        *testing.T
	sentinel *redistest.Sentinel
	stores   []*store.Store
	bases    []string
	client   *http.Client
	bearer   string
}

func newDeployment(t *testing.T, sc scenario) *deployment {
	t.Helper()
	d := &deployment{t: t, sentinel: redistest.StartSentinel(t, sc.replicas)}
	env := map[string]string{
		"FOREST_AUTH_SECRET":      forestSecret,
		"IMPERSONATOR_PUBLIC_URL": "https://imp.example.com",
		"IMPERSONATOR_APP_URL":    "https://app.example.com",
		"IMPERSONATOR_DELIVERY":   "webhook",
		"IMPERSONATOR_LOGIN_RATE": "0",
	}
	cfg, err := config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := action.ParsePolicy([]byte("rate: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	keys := tokentest.Keyset(t, "")
	prefix := redistest.Prefix()
	for range 2 {
		st, err := store.Open(d.sentinel.URL(), store.Options{Prefix: prefix, ReplicaAck: sc.ack})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		h := server.New(server.Deps{
			Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
			Settings: server.SettingsFrom(cfg),
			Store:    st,
			Keys:     keys,
			Issuer:   token.NewIssuer(keys, cfg.PublicURL, cfg.Audience, time.Now),
			Verifier: token.NewVerifier(keys, cfg.PublicURL, cfg.Audience, time.Now),
			Policy:   policy,
		})
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		d.stores = append(d.stores, st)
		d.bases = append(d.bases, srv.URL)
	}
	d.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(d.client.CloseIdleConnections)
	d.bearer, err = jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"id": 1001, "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "team": "Support",
		"role": "Admin", "permissionLevel": "admin", "renderingId": 7, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(forestSecret))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const actionBody = `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],` +
	`"values":{"Reason":"ticket 1234: cannot see invoices"},"smart_action_id":"users-impersonate"}}}`

// mint calls the Forest action on instance i; the token is the webhook's.
func (d *deployment) mint(i int) (answer, string) {
	a := answer{instance: i, start: time.Now()}
	req, _ := http.NewRequest(http.MethodPost, d.bases[i]+"/forest/actions/impersonate", strings.NewReader(actionBody))
	req.Header.Set("Authorization", "Bearer "+d.bearer)
	req.Header.Set("Content-Type", "application/json")
	res, err := d.client.Do(req)
	a.end = time.Now()
	if err != nil {
		a.err = err.Error()
		return a, ""
	}
	defer res.Body.Close()
	a.code = res.StatusCode
	b, _ := io.ReadAll(res.Body)
	if a.code != http.StatusOK {
		a.err = string(b)
		return a, ""
	}
	var w struct {
		Webhook struct {
			Body struct {
				Token string `json:"token"`
			} `json:"body"`
		} `json:"webhook"`
	}
	if err := json.Unmarshal(b, &w); err != nil || w.Webhook.Body.Token == "" {
		a.code, a.err = 0, "200 without a token: "+string(b)
		return a, ""
	}
	a.jti = jtiOf(w.Webhook.Body.Token)
	return a, w.Webhook.Body.Token
}

// login redeems tok on instance i.
func (d *deployment) login(i int, tok string) answer {
	a := answer{redeem: true, instance: i, jti: jtiOf(tok), start: time.Now()}
	body, _ := json.Marshal(map[string]string{"token": tok})
	res, err := d.client.Post(d.bases[i]+"/impersonation/login", "application/json", strings.NewReader(string(body)))
	a.end = time.Now()
	if err != nil {
		a.err = err.Error()
		return a
	}
	defer res.Body.Close()
	a.code = res.StatusCode
	if a.code != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		a.err = string(b)
		return a
	}
	for _, c := range res.Cookies() {
		if strings.HasSuffix(c.Name, session.CookieName) {
			a.sid = claimOf(c.Value, "sid")
		}
	}
	if a.sid == "" {
		a.code, a.err = 0, "200 without a session cookie"
	}
	return a
}

// jtiOf reads the jti of a JWT's payload without verifying it.
func jtiOf(tok string) string { return claimOf(tok, "jti") }

// claimOf reads a string claim of a JWT's payload without verifying it.
func claimOf(tok, name string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c map[string]any
	_ = json.Unmarshal(b, &c)
	v, _ := c[name].(string)
	return v
}

// run runs sc: load on two instances, the primary taken away after warmUp,
// load until the topology settles and coolDown more, then replays, a
// recovery check and the audit log's account.
func run(t *testing.T, sc scenario) figures {
	t.Helper()
	d := newDeployment(t, sc)
	ctx, cancel := context.WithTimeout(context.Background(), loadLimit+20*time.Second)
	defer cancel()

	var (
		mu      sync.Mutex
		answers []answer
		tokens  = map[string]string{} // jti -> token, for 200 mints
		stop    atomic.Bool
		mints   atomic.Int32
		load    sync.WaitGroup // minters
		logins  sync.WaitGroup // delayed logins
	)
	halt := func() { // stop the load and wait for it; also on t.Fatal
		stop.Store(true)
		load.Wait()
		logins.Wait()
	}
	defer halt()
	record := func(a answer) {
		mu.Lock()
		answers = append(answers, a)
		mu.Unlock()
	}
	loadStart := time.Now()
	for m := range minters {
		load.Add(1)
		go func() {
			defer load.Done()
			for n := m; !stop.Load() && time.Since(loadStart) < loadLimit && mints.Add(1) <= maxMints; n++ {
				i := n % 2
				a, tok := d.mint(i)
				record(a)
				if tok != "" {
					mu.Lock()
					tokens[a.jti] = tok
					mu.Unlock()
					logins.Add(1)
					go func() {
						defer logins.Done()
						time.Sleep(time.Until(a.end.Add(redeemDelay)))
						record(d.login(1-i, tok))
					}()
				}
				time.Sleep(mintPause)
			}
		}()
	}

	time.Sleep(warmUp)
	old, err := d.sentinel.PrimaryAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	failover := time.Now()
	if sc.kill {
		d.sentinel.KillPrimary()
	} else if err := d.sentinel.Failover(ctx); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	primary, err := d.sentinel.WaitForNewPrimary(ctx, old)
	if err == nil {
		if sc.kill {
			d.sentinel.RestartNode(old) // empty, as a replica of the new primary
		}
		err = d.sentinel.WaitReplica(ctx, old)
	}
	settled := time.Since(failover)
	if err == nil {
		time.Sleep(coolDown)
	}
	halt()
	if err != nil {
		t.Fatalf("the topology did not settle: %v", err)
	}
	t.Logf("%s: primary %s -> %s; settled %.2fs after the failover", sc, old, primary, settled.Seconds())

	// Replays: every 200 login again, after the topology settled. A 503
	// (the refusal's event not acknowledged in time) is retried: what
	// matters is that no replay gets 200 and each is refused in the end.
	f := figures{settled: settled.Seconds()}
	var replays []answer
	for _, a := range answers {
		if a.redeem && a.code == http.StatusOK {
			r := d.login(1-a.instance, tokens[a.jti])
			for try := 0; r.code == http.StatusServiceUnavailable && try < 10; try++ {
				f.replay503++
				time.Sleep(100 * time.Millisecond)
				r = d.login(a.instance, tokens[a.jti])
			}
			replays = append(replays, r)
		}
	}
	doubled := map[string]bool{} // tokens redeemed twice
	for _, r := range replays {
		if r.code != http.StatusUnauthorized {
			f.replayedOK++
			if r.code == http.StatusOK {
				doubled[r.jti] = true
			}
			if f.replayedOK <= 10 {
				t.Logf("replay of %s after the failover: %d %s", r.jti, r.code, strings.TrimSpace(r.err))
			}
		}
	}

	// Recovery without restart: a fresh mint and login on each instance.
	for i := range d.bases {
		deadline := time.Now().Add(5 * time.Second)
		for {
			a, tok := d.mint(i)
			var l answer
			if tok != "" {
				l = d.login(i, tok)
			}
			if a.code == http.StatusOK && l.code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("instance %d has not recovered 5s after the topology settled: mint %d %s, login %d %s",
					i, a.code, a.err, l.code, l.err)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// The audit log's account of every answer.
	minted, redeemed, sessions := map[string]int{}, map[string]int{}, map[string]int{}
	err = audit.NewLog(d.stores[0], time.Now).Range(ctx, "-", func(e audit.Entry) bool {
		switch e.Event.Type {
		case audit.Minted:
			minted[e.Event.TokenID]++
		case audit.Redeemed:
			redeemed[e.Event.TokenID]++
			sessions[e.Event.SessionID]++
		}
		return true
	})
	if err != nil {
		t.Fatalf("reading the audit log: %v", err)
	}
	since := func(at time.Time) float64 { return at.Sub(failover).Seconds() }
	var last503 time.Time
	for _, a := range answers {
		f.requests++
		switch a.code {
		case http.StatusOK:
			f.ok++
		case http.StatusServiceUnavailable:
			f.unavailable++
			if a.end.Before(failover) {
				f.early503++
			}
			if a.start.After(failover.Add(settled)) {
				f.late503++
			}
			if f.first503 == 0 || since(a.end) < f.first503 {
				f.first503 = since(a.end)
			}
			if a.end.After(last503) {
				last503 = a.end
			}
		default:
			what := "mint"
			if a.redeem {
				what = "login"
			}
			f.unexpected = append(f.unexpected, fmt.Sprintf("%s on instance %d at %+.3fs: %d %s",
				what, a.instance, since(a.end), a.code, strings.TrimSpace(a.err)))
		}
		switch {
		case !a.redeem && a.code == http.StatusOK:
			f.mintsOK++
			if minted[a.jti] == 0 {
				f.lostMinted++
				f.lost = append(f.lost, fmt.Sprintf("minted %s answered at %+.3fs", a.jti, since(a.end)))
			}
		case a.redeem && a.code == http.StatusOK:
			f.redeemsOK++
			if sessions[a.sid] == 0 {
				f.lostRedeemed++
				f.lost = append(f.lost, fmt.Sprintf("redeemed %s answered at %+.3fs", a.jti, since(a.end)))
			}
		case a.redeem && a.code == http.StatusServiceUnavailable:
			f.redeems503++
			if redeemed[a.jti] > 0 {
				f.orphanRedeemed++
			}
		}
	}
	for jti, n := range redeemed {
		if n > 1 {
			doubled[jti] = true
		}
	}
	f.doubles = len(doubled)
	if !last503.IsZero() {
		f.last503 = since(last503)
		for _, a := range answers {
			if a.code == http.StatusOK && a.end.After(last503) && (f.recovered == 0 || since(a.end) < f.recovered) {
				f.recovered = since(a.end)
			}
		}
	}
	t.Logf("%s: %s", sc, f)
	for i, u := range f.unexpected {
		if i == 10 {
			t.Logf("… and %d more unexpected answers", len(f.unexpected)-i)
			break
		}
		t.Logf("unexpected answer: %s", u)
	}
	for i, l := range f.lost {
		if i == 10 {
			t.Logf("… and %d more lost events", len(f.lost)-i)
			break
		}
		t.Logf("lost event: %s", l)
	}
	return f
}

// check asserts what an acknowledged run must hold.
func check(t *testing.T, f figures) {
	t.Helper()
	if f.doubles != 0 {
		t.Errorf("%d tokens were redeemed twice", f.doubles)
	}
	if f.lostMinted+f.lostRedeemed != 0 {
		t.Errorf("%d mints and %d logins answered 200 and lost their audit event", f.lostMinted, f.lostRedeemed)
	}
	if f.replayedOK != 0 {
		t.Errorf("%d replays after the failover were not refused with 401", f.replayedOK)
	}
	if len(f.unexpected) != 0 {
		t.Errorf("%d answers of the load were neither 200 nor 503", len(f.unexpected))
	}
	if f.mintsOK == 0 || f.redeemsOK == 0 {
		t.Errorf("the load got %d mints and %d logins through: not a test", f.mintsOK, f.redeemsOK)
	}
}
