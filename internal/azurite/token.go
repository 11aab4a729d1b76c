package azurite

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// TestTenant is the tenant id that Token and TokenCredential put in a
// token's issuer when none is given.
const TestTenant = "00000000-0000-0000-0000-0000000b10bf"

// Token returns a bearer token that Azurite started with Options.OAuth
// accepts: a JWT whose issuer is https://sts.windows.net/<tenant>/, whose
// audience is https://storage.azure.com and whose iat/nbf/exp span
// [notBefore, expires]. Azurite checks those claims but not the signature,
// so the token is signed with a throwaway key; real Azure would reject it.
func Token(tenant string, notBefore, expires time.Time) string {
	if tenant == "" {
		tenant = TestTenant
	}
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]string{"typ": "JWT", "alg": "HS256"})
	claims, _ := json.Marshal(map[string]any{
		"aud": "https://storage.azure.com",
		"iss": "https://sts.windows.net/" + tenant + "/",
		"tid": tenant,
		"oid": "00000000-0000-0000-0000-00000000b10b",
		"iat": notBefore.Unix(),
		"nbf": notBefore.Unix(),
		"exp": expires.Unix(),
	})
	signed := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(mac.Sum(nil))
}

// TokenCredential returns an azcore.TokenCredential that mints a fresh
// one-hour Token for TestTenant on every call, for clients of an Azurite
// started with Options.OAuth.
func TokenCredential() azcore.TokenCredential { return tokenCredential{} }

type tokenCredential struct{}

func (tokenCredential) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if err := ctx.Err(); err != nil {
		return azcore.AccessToken{}, err
	}
	now := time.Now()
	exp := now.Add(time.Hour)
	return azcore.AccessToken{Token: Token("", now.Add(-5*time.Minute), exp), ExpiresOn: exp}, nil
}
