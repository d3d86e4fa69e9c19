package appsession_test

import (
	"fmt"
	"log"
	"net/http"

	"github.com/impersonator/impersonator/appsession"
)

// The README's usage: the app's handler behind the middleware. (Compiled,
// not run: it would listen.)
func ExampleChecker_Middleware() {
	check, err := appsession.New(appsession.Config{
		PublicURL:  "https://app.example.com", // IMPERSONATOR_PUBLIC_URL
		Audience:   "https://app.example.com", // IMPERSONATOR_AUDIENCE (default: IMPERSONATOR_APP_URL)
		ServiceURL: "http://127.0.0.1:8080",   // where the app reaches impersonator (default: PublicURL)
	})
	if err != nil {
		log.Fatal(err) // every problem of the Config at once
	}
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if imp, ok := appsession.FromContext(r.Context()); ok {
			fmt.Fprintf(w, "viewing as %s (%s), impersonated by %s until %s; read-only: %v\n",
				imp.Subject, imp.SessionID, imp.Actor.Email, imp.ExpiresAt, imp.ReadOnly())
			return
		}
		fmt.Fprintln(w, "your own account")
	})
	log.Fatal(http.ListenAndServe(":3000", check.Middleware(app)))
}
