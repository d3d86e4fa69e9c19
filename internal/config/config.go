// Package config reads impersonator's configuration from the environment and
// the serve command's flags, and validates all of it at once.
package config

import (
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/impersonator/impersonator/internal/notify"
	"github.com/impersonator/impersonator/internal/redisurl"
)

// Secret is a configuration value that must never be printed or logged.
type Secret string

// String redacts the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue redacts the secret in structured logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Reveal returns the secret's value, for the one place that uses it.
func (s Secret) Reveal() string { return string(s) }

// Equal compares s with v in constant time.
func (s Secret) Equal(v string) bool {
	return s != "" && subtle.ConstantTimeCompare([]byte(s), []byte(v)) == 1
}

// Delivery is how the minted token reaches the browser.
type Delivery string

// Delivery modes (DESIGN.md 3.1).
const (
	Webhook  Delivery = "webhook"
	Redirect Delivery = "redirect"
	Auto     Delivery = "auto" // chosen per request by the caller
)

// Rate is a count per period, such as 30/m; N 0 turns the limit off.
type Rate struct {
	N   int
	Per time.Duration
}

func (r Rate) String() string {
	if r.N == 0 {
		return "0"
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h"}[r.Per]
	return fmt.Sprintf("%d/%s", r.N, unit)
}

// ParseRate parses "N/s", "N/m", "N/h" or "0".
func ParseRate(s string) (Rate, error) {
	if strings.TrimSpace(s) == "0" {
		return Rate{}, nil
	}
	n, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	per := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	count, err := strconv.Atoi(n)
	if !ok || per == 0 || err != nil || count < 1 {
		return Rate{}, fmt.Errorf("%q is not a rate: use N/s, N/m or N/h (N ≥ 1), or 0 for no limit", s)
	}
	return Rate{N: count, Per: per}, nil
}

// Config is the whole configuration of serve.
type Config struct {
	Listen           string
	PublicURL        string
	AppURL           string
	Audience         string
	RedisURL         Secret // may carry a password
	KeysDir          string
	ForestAuthSecret Secret
	ForestEnvSecret  Secret
	Delivery         Delivery
	TokenTTL         time.Duration
	SessionTTL       time.Duration
	SessionIdle      time.Duration
	AllowedOrigins   []string
	PolicyFile       string
	AdminTokens      []Secret
	LoginRate        Rate
	// Extensions (README, "Configuration").
	TrustedProxies     []netip.Prefix
	LogFormat          string // text or json
	LogLevel           slog.Level
	CheckpointInterval time.Duration
	AuditRetention     time.Duration // 0: keep everything
	AuditWitness       string        // IMPERSONATOR_AUDIT_WITNESS: the witness file; "": none
	MetricsListen      string        // empty: /metrics on the main listener
	ReplicaAck         time.Duration // wait for a replica's ack this long; 0: off
	SessionUnused      time.Duration // a session never presented within it is ended
	SweepInterval      time.Duration // how often expired sessions are swept
	PolicyPoll         time.Duration // how often the policy file is looked at for changes
	NotifySecret       Secret        // IMPERSONATOR_NOTIFY_SECRET
	Notify             notify.Config // notification targets, key and events
	// Operations (README, "Running it in production").
	ShutdownDrain   time.Duration // after SIGTERM, /readyz 503 while still serving, this long
	ShutdownTimeout time.Duration // then in-flight requests get this long to finish
	AllowEviction   bool          // serve although Redis may evict keys (maxmemory-policy not noeviction)

	// Warnings are findings that do not stop serve; the caller logs them.
	Warnings []string
}

// Var describes one configuration variable, for flags, help and docs.
type Var struct {
	Env     string
	Flag    string
	Default string
	Usage   string
}

// Vars lists every variable in the order of DESIGN.md 3.1, then extensions.
var Vars = []Var{
	{"IMPERSONATOR_LISTEN", "listen", "127.0.0.1:8080", "listen address"},
	{"IMPERSONATOR_PUBLIC_URL", "public-url", "http://localhost:8080", "base URL browsers use to reach this service; token iss; login URL base"},
	{"IMPERSONATOR_APP_URL", "app-url", "http://localhost:3000", "customer app; where the browser lands after login"},
	{"IMPERSONATOR_AUDIENCE", "audience", "", "token aud (default: the app URL)"},
	{"REDIS_URL", "redis-url", "", "redis://, rediss://, unix://, Sentinel or Cluster URL; empty: embedded, non-durable Redis"},
	{"IMPERSONATOR_KEYS_DIR", "keys-dir", "keys", "signing keys folder"},
	{"FOREST_AUTH_SECRET", "forest-auth-secret", "", "Forest auth secret (HS256); required to serve the Forest route"},
	{"FOREST_ENV_SECRET", "forest-env-secret", "", "Forest env secret; enables approval requests"},
	{"IMPERSONATOR_DELIVERY", "delivery", "auto", "auto (webhook, then the start page if the cookie was dropped), webhook or redirect"},
	{"IMPERSONATOR_TOKEN_TTL", "token-ttl", "60s", "impersonation token lifetime, at most 5m"},
	{"IMPERSONATOR_SESSION_TTL", "session-ttl", "30m", "absolute session cap, never extended"},
	{"IMPERSONATOR_SESSION_IDLE", "session-idle", "10m", "session idle timeout (default: the smaller of 10m and IMPERSONATOR_SESSION_TTL)"},
	{"IMPERSONATOR_ALLOWED_ORIGINS", "allowed-origins", "https://app.forestadmin.com,https://*.forestadmin.com", "browser origins allowed for CORS with credentials"},
	{"IMPERSONATOR_POLICY_FILE", "policy-file", "", "who may impersonate whom (YAML or JSON)"},
	{"IMPERSONATOR_ADMIN_TOKENS", "admin-tokens", "", "comma-separated bearer tokens for /v1/*"},
	{"IMPERSONATOR_LOGIN_RATE", "login-rate", "30/m", "failed redemptions allowed per client IP (then 429); 0: no limit"},
	{"IMPERSONATOR_TRUSTED_PROXIES", "trusted-proxies", "", "comma-separated CIDRs of proxies whose X-Forwarded-For is believed"},
	{"IMPERSONATOR_LOG_FORMAT", "log-format", "", "text or json (default: text with the embedded Redis, json otherwise)"},
	{"IMPERSONATOR_LOG_LEVEL", "log-level", "info", "debug, info, warn or error"},
	{"IMPERSONATOR_CHECKPOINT_INTERVAL", "checkpoint-interval", "1m", "how often signed audit checkpoints are written (1s to 1h)"},
	{"IMPERSONATOR_AUDIT_RETENTION", "audit-retention", "0", "audit events older than this are trimmed, whole checkpointed ranges only; 0 keeps everything"},
	{"IMPERSONATOR_AUDIT_WITNESS", "audit-witness", "", "file each checkpoint is appended to, outside Redis (JSON lines, fsynced); recovered at restart"},
	{"IMPERSONATOR_METRICS_LISTEN", "metrics-listen", "", "host:port of a separate listener for /metrics (default: /metrics on the main listener)"},
	{"IMPERSONATOR_REDIS_REPLICA_ACK", "redis-replica-ack", "100ms", "how long a write waits for a Redis replica to acknowledge it (at most 5s); 0: do not wait"},
	{"IMPERSONATOR_SESSION_UNUSED", "session-unused", "2m", "a session never presented within this is ended (at least 1s; default: the smaller of 2m and IMPERSONATOR_SESSION_TTL)"},
	{"IMPERSONATOR_SWEEP_INTERVAL", "sweep-interval", "30s", "how often ended sessions are swept (100ms to 10m)"},
	{"IMPERSONATOR_POLICY_POLL", "policy-poll", "30s", "how often the policy file is checked for changes, then reloaded (100ms to 10m)"},
	{notify.EnvURLs, "notify-urls", "", "comma-separated URLs each selected audit event is POSTed to (Standard Webhooks; slack+https:// for Slack)"},
	{notify.EnvSecret, "notify-secret", "", "notification signing secret: whsec_<base64> or 32+ characters"},
	{notify.EnvEvents, "notify-events", "", "comma-separated audit event types to notify (default: every type)"},
	{"IMPERSONATOR_SHUTDOWN_DRAIN", "shutdown-drain", "5s", "after SIGTERM, /readyz answers 503 while requests are still served this long (0 to 5m), so the load balancer stops sending first"},
	{"IMPERSONATOR_SHUTDOWN_TIMEOUT", "shutdown-timeout", "10s", "then in-flight requests get this long to finish (1s to 10m)"},
	{"IMPERSONATOR_REDIS_ALLOW_EVICTION", "redis-allow-eviction", "false", "true: be ready although Redis's maxmemory-policy may evict keys (approvals, rate counters, sessions); default false: /readyz 503"},
}

// Options are Load's optional hooks.
type Options struct {
	// CheckPolicy, when set, checks the policy file (only when
	// IMPERSONATOR_POLICY_FILE is set and exists); its problems are listed
	// with every other one.
	CheckPolicy func(path string) []error
	// Environ, when set, is the process environment (os.Environ): an
	// IMPERSONATOR_* variable in it that is not a setting is a warning
	// naming the nearest one (a misspelling would be ignored silently).
	Environ []string
}

// OtherEnv lists the IMPERSONATOR_* variables read outside serve's
// configuration (development tools), which are not misspellings.
var OtherEnv = []string{"IMPERSONATOR_DEV_PPROF", "IMPERSONATOR_SCREENSHOTS"}

// Load reads the configuration from args (serve's flags) over getenv over
// the defaults, and validates it. The error lists every problem found.
//
// Load writes to stderr only the usage, when --help is asked for (it then
// returns flag.ErrHelp); a bad flag is not printed, only returned, so the
// caller prints it once.
func Load(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	return LoadWith(Options{}, args, getenv, stderr)
}

// LoadWith is Load with hooks.
func LoadWith(opts Options, args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the caller prints the returned error, once
	fs.Usage = func() {}
	values := make(map[string]*string, len(Vars))
	set := make(map[string]bool) // set by the environment or a flag, not defaulted
	envOf := make(map[string]string, len(Vars))
	for _, v := range Vars {
		def := v.Default
		if e := getenv(v.Env); e != "" {
			def = e
			set[v.Env] = true
		}
		values[v.Env] = fs.String(v.Flag, def, v.Usage)
		envOf[v.Flag] = v.Env
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stderr)
			return nil, err
		}
		return nil, fmt.Errorf("serve: %w (see impersonator serve --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) { set[envOf[f.Name]] = true })
	get := func(env string) string { return strings.TrimSpace(*values[env]) }
	c, err := parse(get, func(env string) bool { return set[env] }, opts)
	if c != nil {
		c.Warnings = append(c.Warnings, unknownEnv(opts.Environ)...)
	}
	return c, err
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: impersonator serve [flags]\n\nEach flag may also be set by its environment variable.\n\n")
	for _, v := range Vars {
		def := v.Default
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "  --%s (%s, default %s)\n      %s\n", v.Flag, v.Env, def, v.Usage)
	}
}

// parse validates the values get returns; isSet says which were given
// rather than defaulted, so a default can follow the setting it depends on.
func parse(get func(string) string, isSet func(string) bool, opts Options) (*Config, error) {
	var problems []error
	bad := func(env, format string, a ...any) {
		problems = append(problems, fmt.Errorf("%s: %s", env, fmt.Sprintf(format, a...)))
	}
	c := &Config{
		Listen:           get("IMPERSONATOR_LISTEN"),
		PublicURL:        strings.TrimRight(get("IMPERSONATOR_PUBLIC_URL"), "/"),
		AppURL:           strings.TrimRight(get("IMPERSONATOR_APP_URL"), "/"),
		Audience:         get("IMPERSONATOR_AUDIENCE"),
		RedisURL:         Secret(get("REDIS_URL")),
		KeysDir:          get("IMPERSONATOR_KEYS_DIR"),
		ForestAuthSecret: Secret(get("FOREST_AUTH_SECRET")),
		ForestEnvSecret:  Secret(get("FOREST_ENV_SECRET")),
		Delivery:         Delivery(get("IMPERSONATOR_DELIVERY")),
		PolicyFile:       get("IMPERSONATOR_POLICY_FILE"),
		LogFormat:        get("IMPERSONATOR_LOG_FORMAT"),
	}
	if c.Audience == "" {
		c.Audience = c.AppURL
	}
	if c.Listen == "" {
		bad("IMPERSONATOR_LISTEN", "empty")
	}
	checkURL := func(env, v string) {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad(env, "%q is not an absolute http(s) URL without query or fragment", v)
		}
	}
	checkURL("IMPERSONATOR_PUBLIC_URL", c.PublicURL)
	checkURL("IMPERSONATOR_APP_URL", c.AppURL)
	if c.Audience == "" {
		bad("IMPERSONATOR_AUDIENCE", "empty")
	}
	if err := redisurl.Validate(c.RedisURL.Reveal()); err != nil {
		bad("REDIS_URL", "%v", err)
	}
	if c.KeysDir == "" {
		bad("IMPERSONATOR_KEYS_DIR", "empty")
	} else if fi, err := os.Stat(c.KeysDir); err == nil {
		if !fi.IsDir() {
			bad("IMPERSONATOR_KEYS_DIR", "%q is not a folder", c.KeysDir)
		} else if perm := fi.Mode().Perm(); perm&0o022 != 0 {
			bad("IMPERSONATOR_KEYS_DIR", "%q is writable by group or others (mode %04o): anyone who can write there can plant a signing key; chmod go-w it", c.KeysDir, perm)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		bad("IMPERSONATOR_KEYS_DIR", "%v", err)
	}
	if s := c.ForestAuthSecret.Reveal(); s != "" && len(s) < 32 {
		bad("FOREST_AUTH_SECRET", "shorter than 32 characters")
	}
	if s := c.ForestEnvSecret.Reveal(); s != "" && len(s) < 32 {
		bad("FOREST_ENV_SECRET", "shorter than 32 characters")
	}
	if c.Delivery != Webhook && c.Delivery != Redirect && c.Delivery != Auto {
		bad("IMPERSONATOR_DELIVERY", "%q is not webhook, redirect or auto", c.Delivery)
	}
	dur := func(env string, lo, hi time.Duration) time.Duration {
		d, err := time.ParseDuration(get(env))
		switch {
		case err != nil:
			bad(env, "%q is not a duration such as 60s or 30m", get(env))
		case d < lo || (hi > 0 && d > hi):
			if hi > 0 {
				bad(env, "%s is outside [%s, %s]", d, lo, hi)
			} else {
				bad(env, "%s is under %s", d, lo)
			}
		}
		return d
	}
	c.TokenTTL = dur("IMPERSONATOR_TOKEN_TTL", 5*time.Second, 5*time.Minute)
	c.SessionTTL = dur("IMPERSONATOR_SESSION_TTL", time.Minute, 24*time.Hour)
	c.SessionIdle = dur("IMPERSONATOR_SESSION_IDLE", 30*time.Second, 24*time.Hour)
	if !isSet("IMPERSONATOR_SESSION_IDLE") && c.SessionTTL > 0 {
		c.SessionIdle = min(c.SessionIdle, c.SessionTTL) // a default never contradicts a TTL the service accepts
	}
	if c.SessionIdle > c.SessionTTL && c.SessionTTL > 0 {
		bad("IMPERSONATOR_SESSION_IDLE", "%s exceeds IMPERSONATOR_SESSION_TTL %s", c.SessionIdle, c.SessionTTL)
	}
	for _, o := range splitList(get("IMPERSONATOR_ALLOWED_ORIGINS")) {
		if err := checkOrigin(o); err != nil {
			bad("IMPERSONATOR_ALLOWED_ORIGINS", "%v", err)
			continue
		}
		if err := checkWildcard(o); err != nil {
			bad("IMPERSONATOR_ALLOWED_ORIGINS", "%v", err)
			continue
		}
		c.AllowedOrigins = append(c.AllowedOrigins, o)
	}
	if c.PolicyFile != "" {
		if _, err := os.Stat(c.PolicyFile); err != nil {
			bad("IMPERSONATOR_POLICY_FILE", "%v", err)
		} else if opts.CheckPolicy != nil {
			for _, err := range opts.CheckPolicy(c.PolicyFile) {
				bad("IMPERSONATOR_POLICY_FILE", "%v", err)
			}
		}
	}
	for i, t := range splitList(get("IMPERSONATOR_ADMIN_TOKENS")) {
		if len(t) < 32 {
			bad("IMPERSONATOR_ADMIN_TOKENS", "token %d is shorter than 32 characters", i+1)
			continue
		}
		c.AdminTokens = append(c.AdminTokens, Secret(t))
	}
	c.NotifySecret = Secret(get(notify.EnvSecret))
	var notifyProblems []error
	c.Notify, notifyProblems = notify.ParseConfig(get(notify.EnvURLs), c.NotifySecret.Reveal(), get(notify.EnvEvents))
	problems = append(problems, notifyProblems...)
	checkSecrets(c, bad)
	var err error
	if c.LoginRate, err = ParseRate(get("IMPERSONATOR_LOGIN_RATE")); err != nil {
		bad("IMPERSONATOR_LOGIN_RATE", "%v", err)
	}
	for _, p := range splitList(get("IMPERSONATOR_TRUSTED_PROXIES")) {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				bad("IMPERSONATOR_TRUSTED_PROXIES", "%q is neither a CIDR nor an IP address", p)
				continue
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		c.TrustedProxies = append(c.TrustedProxies, prefix.Masked())
	}
	if c.LogFormat == "" {
		c.LogFormat = "json"
		if c.RedisURL == "" {
			c.LogFormat = "text"
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("IMPERSONATOR_LOG_FORMAT", "%q is neither text nor json", c.LogFormat)
	}
	if err := c.LogLevel.UnmarshalText([]byte(get("IMPERSONATOR_LOG_LEVEL"))); err != nil {
		bad("IMPERSONATOR_LOG_LEVEL", "%q is not debug, info, warn or error", get("IMPERSONATOR_LOG_LEVEL"))
	}
	c.CheckpointInterval = dur("IMPERSONATOR_CHECKPOINT_INTERVAL", time.Second, time.Hour)
	if v := get("IMPERSONATOR_AUDIT_RETENTION"); v != "0" {
		c.AuditRetention = dur("IMPERSONATOR_AUDIT_RETENTION", time.Hour, 0)
	}
	c.AuditWitness = get("IMPERSONATOR_AUDIT_WITNESS")
	if c.MetricsListen = get("IMPERSONATOR_METRICS_LISTEN"); c.MetricsListen != "" {
		if err := checkHostPort(c.MetricsListen); err != nil {
			bad("IMPERSONATOR_METRICS_LISTEN", "%v", err)
		} else if c.MetricsListen == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
			bad("IMPERSONATOR_METRICS_LISTEN", "%q is IMPERSONATOR_LISTEN too; leave it empty to serve /metrics on the main listener", c.MetricsListen)
		}
	}
	c.ReplicaAck = dur("IMPERSONATOR_REDIS_REPLICA_ACK", 0, 5*time.Second)
	c.SessionUnused = dur("IMPERSONATOR_SESSION_UNUSED", time.Second, 24*time.Hour)
	if !isSet("IMPERSONATOR_SESSION_UNUSED") && c.SessionTTL > 0 {
		c.SessionUnused = min(c.SessionUnused, c.SessionTTL)
	}
	if c.SessionUnused > c.SessionTTL && c.SessionTTL > 0 {
		bad("IMPERSONATOR_SESSION_UNUSED", "%s exceeds IMPERSONATOR_SESSION_TTL %s", c.SessionUnused, c.SessionTTL)
	}
	c.SweepInterval = dur("IMPERSONATOR_SWEEP_INTERVAL", 100*time.Millisecond, 10*time.Minute)
	c.PolicyPoll = dur("IMPERSONATOR_POLICY_POLL", 100*time.Millisecond, 10*time.Minute)
	c.ShutdownDrain = dur("IMPERSONATOR_SHUTDOWN_DRAIN", 0, 5*time.Minute)
	c.ShutdownTimeout = dur("IMPERSONATOR_SHUTDOWN_TIMEOUT", time.Second, 10*time.Minute)
	if c.AllowEviction, err = strconv.ParseBool(get("IMPERSONATOR_REDIS_ALLOW_EVICTION")); err != nil {
		bad("IMPERSONATOR_REDIS_ALLOW_EVICTION", "%q is neither true nor false", get("IMPERSONATOR_REDIS_ALLOW_EVICTION"))
	}

	if c.RedisURL != "" {
		if u, err := url.Parse(c.PublicURL); err == nil && u.Scheme == "http" && !isLoopback(u.Hostname()) {
			c.Warnings = append(c.Warnings, fmt.Sprintf("IMPERSONATOR_PUBLIC_URL %s is plain http on a non-loopback host while REDIS_URL points at a real (production?) Redis: tokens and session cookies cross the network in clear text; use https", c.PublicURL))
		}
	}
	if len(problems) > 0 {
		return nil, &Error{Problems: problems}
	}
	return c, nil
}

// Error lists every configuration problem.
type Error struct{ Problems []error }

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d configuration problem(s):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems.
func (e *Error) Unwrap() []error { return e.Problems }

// Secure reports whether browsers reach the service over https.
func (c *Config) Secure() bool { return strings.HasPrefix(c.PublicURL, "https://") }

// checkOrigin accepts scheme://host[:port] with an optional leading "*."
// wildcard label in the host.
func checkOrigin(o string) error {
	u, err := url.Parse(strings.Replace(o, "*.", "wildcard.", 1))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.Count(o, "*") > 1 ||
		(strings.Contains(o, "*") && !strings.Contains(o, "://*.")) {
		return fmt.Errorf("%q is not an origin (scheme://host[:port], optionally https://*.example.com)", o)
	}
	return nil
}

// checkWildcard refuses a wildcard origin whose suffix is a public suffix
// (https://*.com, https://*.co.uk, https://*.github.io): every site under it
// could call the API with credentials.
func checkWildcard(o string) error {
	_, hostport, _ := strings.Cut(o, "://*.")
	if hostport == "" {
		return nil
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return fmt.Errorf("%q has an empty wildcard suffix", o)
	}
	suffix, icann := publicsuffix.PublicSuffix(host)
	if suffix == host {
		kind := "a private"
		if icann {
			kind = "an ICANN"
		}
		if !icann && !strings.Contains(host, ".") {
			kind = "a top-level"
		}
		return fmt.Errorf("%q: %q is %s public suffix, so the wildcard lets any site under it in; name your own domain (https://*.example.com)", o, host, kind)
	}
	return nil
}

// checkSecrets refuses secrets that are equal to one another (one leaking
// would give away the other's power too) or guessable (see WeakSecret).
func checkSecrets(c *Config, bad func(env, format string, a ...any)) {
	type named struct {
		env, name string
		s         Secret
	}
	var all []named // the ones long enough: the others are reported already
	if len(c.ForestAuthSecret) >= 32 {
		all = append(all, named{"FOREST_AUTH_SECRET", "FOREST_AUTH_SECRET", c.ForestAuthSecret})
	}
	if len(c.ForestEnvSecret) >= 32 {
		all = append(all, named{"FOREST_ENV_SECRET", "FOREST_ENV_SECRET", c.ForestEnvSecret})
	}
	for i, t := range c.AdminTokens {
		all = append(all, named{"IMPERSONATOR_ADMIN_TOKENS", fmt.Sprintf("admin token %d", i+1), t})
	}
	if len(c.NotifySecret) >= 32 {
		all = append(all, named{notify.EnvSecret, notify.EnvSecret, c.NotifySecret})
	}
	for i, a := range all {
		if why := WeakSecret(a.s.Reveal()); why != "" {
			const how = ": generate it randomly (openssl rand -hex 32)"
			if a.env == a.name {
				bad(a.env, "%s%s", why, how)
			} else {
				bad(a.env, "%s %s%s", a.name, why, how)
			}
		}
		for _, b := range all[:i] {
			if subtle.ConstantTimeCompare([]byte(a.s), []byte(b.s)) == 1 {
				bad(a.env, "%s equals %s: every secret must be different", a.name, b.name)
			}
		}
	}
}

func checkHostPort(hp string) error {
	_, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("%q is not host:port", hp)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q has no valid port (0 to 65535; 0 picks a free one)", hp)
	}
	return nil
}

func isLoopback(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
