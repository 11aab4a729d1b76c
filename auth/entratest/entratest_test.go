package entratest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func decode(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTokenEndpointProtocol(t *testing.T) {
	now := time.Unix(2_000_000_000, 0)
	s := New(t, Options{Lifetime: time.Minute, Now: func() time.Time { return now }})
	c := s.Client()

	resp, err := c.Get(s.URL() + "/tenant-a/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	disc := decode(t, resp)
	if disc["token_endpoint"] != s.TokenEndpoint("tenant-a") || disc["issuer"] != s.URL()+"/tenant-a/v2.0" {
		t.Errorf("discovery = %v", disc)
	}

	s.SetSecret("tenant-a", "app", "pw-1234")
	post := func(form url.Values) (int, map[string]any) {
		resp, err := c.PostForm(s.TokenEndpoint("tenant-a"), form)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, decode(t, resp)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}, "client_secret": {"pw-1234"}, "scope": {"https://storage.azure.com/.default"}}
	code, body := post(form)
	if code != http.StatusOK || body["expires_in"] != float64(60) || body["token_type"] != "Bearer" {
		t.Fatalf("%d %v", code, body)
	}
	claims, err := s.Claims(body["access_token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if claims["iss"] != "https://sts.windows.net/tenant-a/" || claims["aud"] != StorageAudience ||
		claims["exp"] != float64(now.Add(time.Minute).Unix()) || claims["appid"] != "app" {
		t.Errorf("claims %v", claims)
	}

	form.Set("client_secret", "nope")
	if code, body := post(form); code != http.StatusUnauthorized || body["error"] != "invalid_client" ||
		!strings.HasPrefix(body["error_description"].(string), "AADSTS7000215:") || strings.Contains(body["error_description"].(string), "nope") {
		t.Errorf("wrong secret: %d %v", code, body)
	}
	form.Set("client_secret", "pw-1234")
	s.Revoke("app")
	if code, body := post(form); code != http.StatusBadRequest || !strings.Contains(body["error_description"].(string), "AADSTS7000112") {
		t.Errorf("revoked: %d %v", code, body)
	}
	s.Restore("app")
	if code, _ := post(form); code != http.StatusOK {
		t.Errorf("restored: %d", code)
	}

	// Federated credential: only the current assertion passes.
	a1, a2 := FederatedToken("system:serviceaccount:ns:sa"), FederatedToken("system:serviceaccount:ns:sa")
	if a1 == a2 {
		t.Fatal("FederatedToken repeats")
	}
	s.SetAssertion("tenant-a", "wi", a1)
	wi := url.Values{"grant_type": {"client_credentials"}, "client_id": {"wi"}, "client_assertion_type": {AssertionType},
		"client_assertion": {a1}, "scope": {"https://storage.azure.com/.default"}}
	if code, _ := post(wi); code != http.StatusOK {
		t.Errorf("assertion: %d", code)
	}
	s.SetAssertion("tenant-a", "wi", a2)
	if code, body := post(wi); code != http.StatusBadRequest || !strings.Contains(body["error_description"].(string), "AADSTS700213") {
		t.Errorf("rotated-out assertion: %d %v", code, body)
	}
	if st := s.Stats("wi"); st.Issued != 1 || st.Rejected != 1 || st.LastAssertion != a1 {
		t.Errorf("stats %+v", st)
	}
	// Wrong tenant.
	resp, err = c.PostForm(s.TokenEndpoint("tenant-b"), form)
	if err != nil {
		t.Fatal(err)
	}
	if body := decode(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body["error_description"].(string), "AADSTS700016") {
		t.Errorf("wrong tenant: %d %v", resp.StatusCode, body)
	}
}

func TestManagedIdentityProtocol(t *testing.T) {
	s := New(t, Options{})
	s.AddManagedIdentity(ManagedIdentity{TenantID: "t", ClientID: "sys", SystemAssigned: true})
	s.AddManagedIdentity(ManagedIdentity{TenantID: "t", ClientID: "ua", ResourceID: "/subs/x/ua"})
	get := func(query string, header bool) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, s.ManagedIdentityEndpoint()+"?"+query, nil)
		if header {
			req.Header.Set("X-IDENTITY-HEADER", s.ManagedIdentityHeader())
		}
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, decode(t, resp)
	}
	q := "api-version=2019-08-01&resource=https://storage.azure.com"
	if code, _ := get(q, false); code != http.StatusUnauthorized {
		t.Errorf("no header: %d", code)
	}
	if code, _ := get("api-version=2017-09-01&resource=r", true); code != http.StatusBadRequest {
		t.Errorf("old api-version: %d", code)
	}
	for query, want := range map[string]string{q: "sys", q + "&client_id=ua": "ua", q + "&mi_res_id=/subs/x/ua": "ua"} {
		code, body := get(query, true)
		if code != http.StatusOK || body["client_id"] != want || body["token_type"] != "Bearer" || body["resource"] != "https://storage.azure.com" {
			t.Errorf("%s: %d %v", query, code, body)
			continue
		}
		if _, ok := body["expires_on"].(string); !ok {
			t.Errorf("expires_on %v is not a string of seconds", body["expires_on"])
		}
		if claims, err := s.Claims(body["access_token"].(string)); err != nil || claims["appid"] != want {
			t.Errorf("claims %v %v", claims, err)
		}
	}
	if code, _ := get(q+"&client_id=nobody", true); code != http.StatusBadRequest {
		t.Errorf("unknown identity: %d", code)
	}
}

// The stand-in's client only dials loopback: a request for the instance
// metadata endpoint fails before leaving the machine.
func TestClientRefusesIMDS(t *testing.T) {
	s := New(t, Options{})
	_, err := s.Client().Get("http://169.254.169.254/metadata/identity/oauth2/token")
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("err = %v, want a loopback-only refusal", err)
	}
}
