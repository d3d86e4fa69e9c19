package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
)

// The OpenAPI document (openapi.yaml) held to the service: it is valid
// OpenAPI (kin-openapi), its paths and methods are the router's (chi.Walk), its schemas validate the golden
// answers and requests of testdata/ and every answer of a live tour of the
// routes, and that tour reaches every documented operation. The schemas are
// JSON Schema 2020-12 (OpenAPI 3.1's dialect), checked by a JSON Schema
// validator rather than by hand: nested objects, nullable fields, enums,
// date-times and the closed (additionalProperties: false) answers are what
// drifts, and a hand check of property names would miss most of it.

const specURL = "file:///openapi.json"

// spec is the parsed document: the tree to navigate and the compiler its
// schemas are compiled from.
type spec struct {
	doc      map[string]any
	compiler *jsonschema.Compiler
}

func loadSpec(t *testing.T) *spec {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("openapi = %q, want 3.1.x", v)
	}
	// Through JSON: the validator takes JSON values, and the document must
	// have a JSON form (string keys only).
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("openapi.yaml has no JSON form: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(specURL, inst); err != nil {
		t.Fatal(err)
	}
	return &spec{doc: doc, compiler: c}
}

// pointer escapes one JSON pointer token.
func pointer(tok string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

// at returns the node at JSON pointer ptr ("/paths/~1healthz/get"),
// following a $ref met on the way, and the pointer of what it returned.
func (s *spec) at(ptr string) (any, string, error) {
	var node any = s.doc
	here := ""
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		if ref := refOf(node); ref != "" {
			var err error
			if node, here, err = s.at(ref); err != nil {
				return nil, "", err
			}
		}
		var next any
		switch n := node.(type) {
		case map[string]any:
			next = n[strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")]
		case []any:
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(n) {
				next = n[i]
			}
		}
		if next == nil {
			return nil, "", fmt.Errorf("no %s in the document", here+"/"+tok)
		}
		node, here = next, here+"/"+tok
	}
	if ref := refOf(node); ref != "" {
		return s.at(ref)
	}
	return node, here, nil
}

func refOf(node any) string {
	m, _ := node.(map[string]any)
	ref, _ := m["$ref"].(string)
	return strings.TrimPrefix(ref, "#")
}

// validate checks the JSON body against the schema at ptr.
func (s *spec) validate(ptr string, body []byte) error {
	_, here, err := s.at(ptr)
	if err != nil {
		return err
	}
	sch, err := s.compiler.Compile(specURL + "#" + here)
	if err != nil {
		return fmt.Errorf("schema %s: %v", here, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("body is not JSON: %v", err)
	}
	return sch.Validate(inst)
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// operations lists the document's "METHOD path"s.
func (s *spec) operations() []string {
	var out []string
	paths, _ := s.doc["paths"].(map[string]any)
	for p, item := range paths {
		item, _ := item.(map[string]any)
		for _, m := range httpMethods {
			if item[m] != nil {
				out = append(out, strings.ToUpper(m)+" "+p)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIRoutes: every route of the router is in the document with its
// method, and every operation of the document is a route; every {param} of
// a path is declared as a path parameter, and no other.
func TestOpenAPIRoutes(t *testing.T) {
	s := loadSpec(t)
	_, url := redistest.EmbeddedURL(t)
	h := New(testDeps(t, url)) // /metrics on the main listener: every route
	var routes []string
	err := chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes = append(routes, method+" "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(routes)
	ops := s.operations()
	for _, r := range routes {
		if !slices.Contains(ops, r) {
			t.Errorf("route %s is not in openapi.yaml", r)
		}
	}
	for _, op := range ops {
		if !slices.Contains(routes, op) {
			t.Errorf("openapi.yaml's %s is not a route of routes.go", op)
		}
	}

	braces := regexp.MustCompile(`\{([^}]+)\}`)
	for _, op := range s.operations() {
		method, path, _ := strings.Cut(op, " ")
		var want []string
		for _, m := range braces.FindAllStringSubmatch(path, -1) {
			want = append(want, m[1])
		}
		var got []string
		for _, level := range []string{"", "/" + strings.ToLower(method)} {
			node, _, err := s.at("/paths/" + pointer(path) + level)
			if err != nil {
				t.Fatal(err)
			}
			params, _ := node.(map[string]any)["parameters"].([]any)
			for i := range params {
				p, _, err := s.at(fmt.Sprintf("/paths/%s%s/parameters/%d", pointer(path), level, i))
				if err != nil {
					t.Fatal(err)
				}
				if p := p.(map[string]any); p["in"] == "path" {
					if p["required"] != true {
						t.Errorf("%s: path parameter %v is not required", op, p["name"])
					}
					got = append(got, p["name"].(string))
				}
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: path parameters declared %v, want %v", op, got, want)
		}
	}
}

// TestOpenAPIDocument: the document is valid OpenAPI as a consumer's tool
// reads it (kin-openapi's loader and validator: every $ref resolves,
// operation ids are unique, each operation declares exactly its path's
// parameters, every response has a description, security schemes are
// well formed), and no key of it is empty: in YAML a comma in an unquoted
// flow-mapping value starts a new key, silently.
func TestOpenAPIDocument(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(openAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Error(err)
	}
	var walk func(at string, node any)
	walk = func(at string, node any) {
		switch n := node.(type) {
		case map[string]any:
			for k, v := range n {
				if v == nil && k != "default" && k != "const" {
					t.Errorf("%s/%s is empty: a stray key?", at, k)
				}
				walk(at+"/"+k, v)
			}
		case []any:
			for i, v := range n {
				walk(fmt.Sprintf("%s/%d", at, i), v)
			}
		}
	}
	walk("", loadSpec(t).doc)
}

// TestOpenAPIServed: GET /openapi.yaml serves the document as shipped.
func TestOpenAPIServed(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	h := New(testDeps(t, url))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.yaml", nil))
	shipped, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), shipped) {
		t.Errorf("GET /openapi.yaml = %d, %d bytes; want 200 and openapi.yaml's %d bytes", rec.Code, rec.Body.Len(), len(shipped))
	}
	if got := rec.Header().Get("Content-Type"); got != "application/yaml" {
		t.Errorf("Content-Type = %q, want application/yaml", got)
	}
}

// TestOpenAPIEventTypes: the document's event types are audit.Types.
func TestOpenAPIEventTypes(t *testing.T) {
	s := loadSpec(t)
	node, _, err := s.at("/components/schemas/EventType/enum")
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, v := range node.([]any) {
		got = append(got, v.(string))
	}
	for _, ty := range audit.Types {
		want = append(want, string(ty))
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("EventType enum (-audit.Types +openapi.yaml):\n%s", diff)
	}
}

// goldenOps says which operation each golden file is an answer (status) or
// a request (status 0) of. A golden file missing here fails the test.
var goldenOps = map[string]struct {
	op     string
	status int
}{
	"../action/testdata/answers/webhook.json":                     {"POST /forest/actions/impersonate", 200},
	"../action/testdata/answers/auto.json":                        {"POST /forest/actions/impersonate", 200},
	"../action/testdata/answers/redirect.json":                    {"POST /forest/_actions/{collection}/{index}/impersonate", 200},
	"../action/testdata/answers/400-access.json":                  {"POST /forest/actions/impersonate", 400},
	"../action/testdata/answers/400-all-records.json":             {"POST /forest/actions/impersonate", 400},
	"../action/testdata/answers/400-malformed.json":               {"POST /forest/actions/impersonate", 400},
	"../action/testdata/answers/400-no-reason.json":               {"POST /forest/actions/impersonate", 400},
	"../action/testdata/answers/400-path-mismatch.json":           {"POST /forest/_actions/{collection}/{index}/impersonate", 400},
	"../action/testdata/answers/400-short-reason.json":            {"POST /forest/actions/impersonate", 400},
	"../action/testdata/answers/400-two-ids.json":                 {"POST /forest/actions/impersonate", 400},
	"../action/testdata/answers/401.json":                         {"POST /forest/actions/impersonate", 401},
	"../action/testdata/answers/403.json":                         {"POST /forest/_actions/{collection}/{index}/impersonate", 403},
	"../action/testdata/answers/422.json":                         {"POST /forest/actions/impersonate", 422},
	"../action/testdata/answers/503.json":                         {"POST /forest/actions/impersonate", 503},
	"../action/testdata/answers/503-not-configured.json":          {"POST /forest/actions/impersonate", 503},
	"../action/testdata/answers/hooks-load.json":                  {"POST /forest/actions/impersonate/hooks/load", 200},
	"../action/testdata/answers/hooks-load-access.json":           {"POST /forest/_actions/{collection}/{index}/impersonate/hooks/load", 200},
	"../action/testdata/answers/hooks-change.json":                {"POST /forest/actions/impersonate/hooks/change", 200},
	"../action/testdata/answers/hooks-change-access.json":         {"POST /forest/_actions/{collection}/{index}/impersonate/hooks/change", 200},
	"../action/testdata/answers/hooks-change-access-invalid.json": {"POST /forest/actions/impersonate/hooks/change", 200},
	"../action/testdata/requests/agent-nodejs-users-42.json":      {"POST /forest/_actions/{collection}/{index}/impersonate", 0},
	"../action/testdata/requests/all-records.json":                {"POST /forest/actions/impersonate", 0},
	"../action/testdata/requests/companies-9.json":                {"POST /forest/actions/impersonate", 0},
	"../action/testdata/requests/legacy-users-42.json":            {"POST /forest/actions/impersonate", 0},
	"../action/testdata/requests/minimal-numeric-id.json":         {"POST /forest/actions/impersonate", 0},
	"../action/testdata/requests/no-reason.json":                  {"POST /forest/actions/impersonate", 0},
	"../action/testdata/requests/requester-id.json":               {"POST /forest/actions/impersonate", 0},
	"../action/testdata/requests/short-reason.json":               {"POST /forest/actions/impersonate", 0},
	"../action/testdata/requests/two-ids.json":                    {"POST /forest/actions/impersonate", 0},
	"../action/testdata/requests/users-1-root.json":               {"POST /forest/actions/impersonate", 0},
	"../action/testdata/requests/hooks-change.json":               {"POST /forest/actions/impersonate/hooks/change", 0},
	"testdata/answers/history.json":                               {"GET /v1/subjects/{collection}/{id}/history", 200},
	"testdata/answers/history-with-email.json":                    {"GET /v1/subjects/{collection}/{id}/history", 200},
}

// opPointer is the pointer of operation "METHOD path".
func opPointer(op string) string {
	method, path, _ := strings.Cut(op, " ")
	return "/paths/" + pointer(path) + "/" + strings.ToLower(method)
}

// TestOpenAPIGoldens: the document's schemas validate every golden answer
// and request of the service's tests (internal/action's and this
// package's), each against its operation and status.
func TestOpenAPIGoldens(t *testing.T) {
	s := loadSpec(t)
	var files []string
	for _, dir := range []string{"../action/testdata/answers", "../action/testdata/requests", "testdata/answers"} {
		matches, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, matches...)
	}
	if len(files) < len(goldenOps) {
		t.Fatalf("found %d golden files, fewer than the %d the table names", len(files), len(goldenOps))
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), func(t *testing.T) {
			g, ok := goldenOps[filepath.ToSlash(f)]
			if !ok {
				t.Fatalf("%s: a golden file goldenOps does not name: which operation is it of?", f)
			}
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ptr := opPointer(g.op) + "/requestBody/content/application~1json/schema"
			if g.status != 0 {
				ptr = opPointer(g.op) + "/responses/" + strconv.Itoa(g.status) + "/content/application~1json/schema"
			}
			if err := s.validate(ptr, body); err != nil {
				t.Errorf("%s does not validate against %s %s: %v", f, g.op, ptr, err)
			}
		})
	}
	// A control: a schema that must refuse something does.
	if err := s.validate(opPointer("POST /forest/actions/impersonate")+"/responses/200/content/application~1json/schema",
		[]byte(`{"success":"x","redirectTo":"y","token":"leaked"}`)); err == nil {
		t.Error("an answer with an undocumented field validated")
	}
}

// specChecker wraps the router: each answer is validated against the
// document (its operation, its status, its content type and, for JSON, its
// schema), and the operations answered are counted.
type specChecker struct {
	t       *testing.T
	s       *spec
	mux     chi.Routes
	next    http.Handler
	answers map[string]int // "METHOD pattern status" → 2xx/3xx answers seen
}

func (c *specChecker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.t.Helper()
	rec, ok := w.(*httptest.ResponseRecorder)
	if !ok {
		c.t.Fatal("specChecker needs an httptest.ResponseRecorder")
	}
	c.next.ServeHTTP(rec, r)
	pattern := c.mux.Find(chi.NewRouteContext(), r.Method, r.URL.Path)
	if pattern == "" {
		return // 404/405: no operation
	}
	op := r.Method + " " + pattern
	if err := c.check(op, rec); err != nil {
		c.t.Errorf("%s %s → %d: %v\nbody: %.300s", r.Method, r.URL, rec.Code, err, rec.Body.String())
		return
	}
	if rec.Code < 400 {
		c.answers[op+" "+strconv.Itoa(rec.Code)]++
	}
}

func (c *specChecker) check(op string, rec *httptest.ResponseRecorder) error {
	ptr := opPointer(op) + "/responses/" + strconv.Itoa(rec.Code)
	resp, here, err := c.s.at(ptr)
	if err != nil {
		return fmt.Errorf("status not documented: %v", err)
	}
	content, _ := resp.(map[string]any)["content"].(map[string]any)
	if len(content) == 0 {
		if rec.Body.Len() != 0 {
			return fmt.Errorf("a body where %s documents none", here)
		}
		return nil
	}
	mt, _, _ := mime.ParseMediaType(rec.Header().Get("Content-Type"))
	if content[mt] == nil {
		return fmt.Errorf("Content-Type %q is not one of %s's", mt, here)
	}
	if mt != "application/json" {
		return nil
	}
	return c.s.validate(here+"/content/application~1json/schema", rec.Body.Bytes())
}

// TestOpenAPILive: a tour of the service's routes on a real Redis (mint on
// both action paths, the form hooks, login, the session check, logout, the
// admin API, the public routes, preflights, and refusals on the way); every
// answer validates against the document, and every documented success
// (2xx, 3xx) of every operation was answered at least once.
func TestOpenAPILive(t *testing.T) {
	s := loadSpec(t)
	d := newDeployment(t, nil)
	// The wall clock: the audit's verification holds each event's time
	// to its stream id's (Redis's clock).
	d.mu.Lock()
	d.now = time.Now().UTC()
	d.mu.Unlock()
	checker := &specChecker{t: t, s: s, mux: d.h.(chi.Routes), next: d.h, answers: map[string]int{}}
	d.h = checker
	appOrigin := map[string]string{"Origin": "http://app.test"}
	forest := map[string]string{"Origin": "https://app.forestadmin.com", "Access-Control-Request-Method": "POST"}

	// Public routes.
	for _, p := range []string{"/healthz", "/readyz", "/.well-known/jwks.json", "/metrics", "/openapi.yaml",
		"/impersonation/start", "/impersonation/start.js", "/impersonation/banner.js"} {
		d.do("GET", p, "", nil, nil)
	}
	d.do("HEAD", "/.well-known/jwks.json", "", nil, nil)
	// Every action path (both actions, both agents' paths) and its hooks:
	// the preflight, without the Forest JWT (401, or the form), and the
	// hooks with the JWT and a request.
	hookReq, err := os.ReadFile("../action/testdata/requests/hooks-change.json")
	if err != nil {
		t.Fatal(err)
	}
	withJWT := map[string]string{"Authorization": "Bearer " + d.forestJWT(featAda)}
	var actionPaths []string
	for _, name := range []string{"impersonate", "impersonation-history"} {
		actionPaths = append(actionPaths, "/forest/actions/"+name, "/forest/_actions/users/0/"+name)
	}
	for _, p := range actionPaths {
		for _, suffix := range []string{"", "/hooks/load", "/hooks/change"} {
			d.do("OPTIONS", p+suffix, "", forest, nil)
			d.do("POST", p+suffix, "", nil, nil)
			if suffix != "" {
				d.do("POST", p+suffix, string(hookReq), withJWT, nil)
			}
		}
	}
	d.do("OPTIONS", "/impersonation/login", "", forest, nil)
	for _, p := range []string{"/impersonation/session", "/impersonation/logout"} {
		d.do("OPTIONS", p, "", map[string]string{"Origin": "http://app.test", "Access-Control-Request-Method": "GET"}, nil)
	}

	// An impersonation on the legacy path, its session, a refusal, logout.
	c := d.impersonate(featAda, "users", "42", "ticket 1: invoices missing", "")
	d.do("GET", "/impersonation/session", "", map[string]string{"X-Forwarded-Method": "POST"}, c)
	d.do("POST", "/impersonation/logout", "", appOrigin, c)
	d.do("GET", "/impersonation/session", "", nil, c)                         // 401
	d.do("POST", "/impersonation/login", `{"token":"not-a-token"}`, nil, nil) // 401
	d.do("POST", "/impersonation/login", "token=", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, nil)
	// The start page's form login: 303 to the app.
	rec := d.mint(featAda, "users", "42", "ticket 1: from the start page", "")
	if rec.Code != 200 {
		t.Fatalf("mint: %d %s", rec.Code, rec.Body.String())
	}
	form := d.do("POST", "/impersonation/login", "token="+webhookToken(t, rec.Body.String()),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "same-origin"}, nil)
	if form.Code != http.StatusSeeOther {
		t.Errorf("form login: %d %s, want 303", form.Code, form.Body.String())
	}
	d.mint(featAda, "users", "42", "short", "")                          // 400
	d.mint(featAda, "companies", "9", "ticket 1: not a user at all", "") // 403

	// The new agents' path, read only; the session check refuses a change.
	rec = d.do("POST", "/forest/_actions/users/0/impersonate", mintBody(t, "users", "7", "ticket 2: address change", "Read only"),
		map[string]string{"Authorization": "Bearer " + d.forestJWT(featGrace)}, nil)
	if rec.Code != 200 {
		t.Fatalf("mint on the new path: %d %s", rec.Code, rec.Body.String())
	}
	c7, _ := d.login(webhookToken(t, rec.Body.String()))
	if c7 == nil {
		t.Fatal("no session for users 7")
	}
	d.do("GET", "/impersonation/session", "", nil, c7)
	d.do("GET", "/impersonation/session", "", map[string]string{"X-Forwarded-Method": "DELETE"}, c7) // 403

	// The Impersonation history action on both paths, and a refusal.
	for _, p := range actionPaths[2:] {
		d.do("POST", p, mintBody(t, "users", "42", "", ""), withJWT, nil)
	}
	d.do("POST", "/forest/_actions/companies/0/impersonation-history", mintBody(t, "users", "42", "", ""), withJWT, nil) // 400

	// The admin API.
	c42 := d.impersonate(featAda, "users", "42", "ticket 3: still broken", "")
	d.admin("GET", "/v1/sessions", "")
	d.admin("GET", "/v1/sessions?actor=1001", "")
	d.admin("GET", "/v1/sessions/"+sidOf(t, d, c42)+"/activity", "")
	d.admin("GET", "/v1/sessions/AAAAAAAAAAAAAAAAAAAAAA/activity", "") // 404
	d.admin("GET", "/v1/sessions/a:b/activity", "")                    // 400
	d.admin("DELETE", "/v1/sessions/"+sidOf(t, d, c42), "")
	d.admin("DELETE", "/v1/sessions/"+sidOf(t, d, c42), "") // 404
	d.admin("DELETE", "/v1/sessions", "")                   // 400
	d.admin("DELETE", "/v1/sessions?actor=2002", "")
	d.admin("GET", "/v1/audit/events", "")
	d.admin("GET", "/v1/audit/events?type=impersonation.minted&limit=2", "")
	d.admin("GET", "/v1/audit/events?limit=0", "") // 400
	d.admin("GET", "/v1/audit/verify", "")
	until := d.clock().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	d.admin("PUT", "/v1/consents/users/42", `{"until":"`+until+`","note":"on the phone"}`)
	d.admin("GET", "/v1/consents/users/42", "")
	d.admin("DELETE", "/v1/consents/users/42", "")
	d.admin("GET", "/v1/consents/users/42", "") // 404
	d.admin("PUT", "/v1/consents/users/42", `{"note":"no until"}`)
	d.admin("GET", "/v1/subjects/users/42/history", "")
	d.admin("GET", "/v1/subjects/users/42/history?include_actor_email=true&limit=1", "")
	d.admin("GET", "/v1/subjects/users/042/history", "") // 400
	d.do("GET", "/v1/sessions", "", nil, nil)            // 401

	// Every documented success of every operation was seen.
	var missed []string
	for _, op := range s.operations() {
		node, _, err := s.at(opPointer(op) + "/responses")
		if err != nil {
			t.Fatal(err)
		}
		for status := range node.(map[string]any) {
			if n, _ := strconv.Atoi(status); n < 400 && checker.answers[op+" "+status] == 0 {
				missed = append(missed, op+" "+status)
			}
		}
	}
	slices.Sort(missed)
	if len(missed) > 0 {
		t.Errorf("documented successes the tour never saw: %v", missed)
	}
}

// forestJWT signs admin's claims as the Forest UI does, valid an hour.
func (d *deployment) forestJWT(admin jwt.MapClaims) string {
	d.t.Helper()
	claims := jwt.MapClaims{"exp": d.clock().Add(time.Hour).Unix()}
	for k, v := range admin {
		claims[k] = v
	}
	bearer, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(featForestSecret))
	if err != nil {
		d.t.Fatal(err)
	}
	return bearer
}

// mintBody is an action request for collection/id with reason and Access.
func mintBody(t *testing.T, collection, id, reason, access string) string {
	t.Helper()
	body, err := json.Marshal(map[string]any{"data": map[string]any{"type": "custom-action-requests", "attributes": map[string]any{
		"collection_name": collection, "ids": []string{id}, "values": map[string]any{"Reason": reason, "Access": access},
		"smart_action_id": collection + "-impersonate"}}})
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
