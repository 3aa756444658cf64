// o2p-session mints an oauth2-proxy cookie session for the load comparison (scripts/load.sh),
// with oauth2-proxy's own cookie session store, so the cookie is exactly what its login flow
// would set. It reads a Keycloak token response (JSON, from a password grant with scope openid)
// on stdin and prints the Cookie header value on stdout.
//
// Why not the login flow: the test realm's only client has the authorization-code flow off,
// and the shared Keycloak must not be changed; the session contents are the same either way.
//
// Usage: o2p-session COOKIE_SECRET < token.json
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/oauth2-proxy/oauth2-proxy/v7/pkg/apis/options"
	"github.com/oauth2-proxy/oauth2-proxy/v7/pkg/apis/sessions"
	"github.com/oauth2-proxy/oauth2-proxy/v7/pkg/sessions/cookie"
)

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "o2p-session: "+f+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: o2p-session COOKIE_SECRET < token.json")
	}
	var tok struct {
		AccessToken  string `json:"access_token"`
		IDToken      string `json:"id_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresIn    int64  `json:"expires_in"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&tok); err != nil || tok.IDToken == "" {
		fail("no token response with an id_token on stdin (%v)", err)
	}
	parts := strings.Split(tok.IDToken, ".")
	if len(parts) != 3 {
		fail("id_token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		fail("id_token payload: %v", err)
	}
	var claims struct {
		Sub               string   `json:"sub"`
		Email             string   `json:"email"`
		PreferredUsername string   `json:"preferred_username"`
		Groups            []string `json:"groups"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		fail("id_token claims: %v", err)
	}
	now := time.Now()
	expires := now.Add(time.Duration(tok.ExpiresIn) * time.Second)
	ss := &sessions.SessionState{
		AccessToken:       tok.AccessToken,
		IDToken:           tok.IDToken,
		RefreshToken:      tok.RefreshToken,
		CreatedAt:         &now,
		ExpiresOn:         &expires,
		Email:             claims.Email,
		User:              claims.Sub,
		PreferredUsername: claims.PreferredUsername,
		Groups:            claims.Groups,
	}
	cookieOpts := &options.Cookie{
		Name:     "_oauth2_proxy",
		Secret:   os.Args[1],
		Path:     "/",
		Expire:   168 * time.Hour,
		HTTPOnly: true,
	}
	store, err := cookie.NewCookieSessionStore(&options.SessionOptions{Type: options.CookieSessionStoreType}, cookieOpts)
	if err != nil {
		fail("session store: %v", err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
	if err := store.Save(rec, req, ss); err != nil {
		fail("save: %v", err)
	}
	var pairs []string
	for _, c := range rec.Result().Cookies() {
		pairs = append(pairs, c.Name+"="+c.Value)
	}
	fmt.Println(strings.Join(pairs, "; "))
}
