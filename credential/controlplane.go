package credential

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/modelgate/modelgate/internal/httpx"
	"github.com/modelgate/modelgate/internal/problem"
	"github.com/modelgate/modelgate/internal/redact"
)

// Azure AD scopes and the ARM API version the sources use by default.
const (
	// ScopeWorkspaceAPI is the scope of the ARM token sent to the AML
	// workspace service API ({api_host}/modelmanagement/v1.0/...), as the
	// Azure ML SDK v1 requests it (note the double slash).
	ScopeWorkspaceAPI = "https://management.core.windows.net//.default"
	// ScopeARM is the scope of the token sent to Azure Resource Manager
	// (online endpoint token and listKeys).
	ScopeARM = "https://management.azure.com/.default"
	// ScopeAzureML is the default scope of aad_token upstreams (online
	// endpoints in aad_token mode).
	ScopeAzureML = "https://ml.azure.com/.default"
	// DefaultAPIVersion is the ARM api-version used for online endpoints.
	DefaultAPIVersion = "2024-04-01"
	// DefaultManagementHost is the public-cloud ARM host.
	DefaultManagementHost = "https://management.azure.com"
)

// maxControlPlaneBody bounds what is read from a control-plane response.
const maxControlPlaneBody = 1 << 20

// Workspace identifies an Azure ML workspace and the hosts that serve it.
type Workspace struct {
	// SubscriptionID, ResourceGroup and Name identify the workspace.
	SubscriptionID string
	ResourceGroup  string
	Name           string
	// Region is the workspace's region, e.g. westeurope. It sets the
	// default APIHost and is required for web services (SDK v1) unless
	// APIHost is set.
	Region string
	// APIHost is the workspace service API (SDK v1 web services).
	// Default: https://{Region}.api.azureml.ms.
	APIHost string
	// ManagementHost is Azure Resource Manager (online endpoints).
	// Default: https://management.azure.com.
	ManagementHost string
}

// regionPattern is the shape of an Azure region name such as westeurope.
var regionPattern = regexp.MustCompile(`^[a-z0-9]+$`)

// problems records what is wrong with w at paths under "workspace".
func (w Workspace) problems(probs *problem.List) {
	for _, f := range []struct{ field, val string }{{"subscription_id", w.SubscriptionID}, {"resource_group", w.ResourceGroup}, {"name", w.Name}} {
		if f.val == "" {
			probs.Add("workspace."+f.field, "missing: the Azure ML workspace's %s", strings.ReplaceAll(f.field, "_", " "))
		} else if strings.ContainsAny(f.val, "/?#% ") {
			probs.Add("workspace."+f.field, "%q contains characters not allowed in an Azure resource name", f.val)
		}
	}
	if w.Region != "" && !regionPattern.MatchString(w.Region) {
		probs.Add("workspace.region", "%q is not an Azure region name like westeurope", w.Region)
	}
}

// serviceBase returns
// {api_host}/modelmanagement/v1.0/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}/services/{name},
// recording problems at paths relative to the auth section.
func (w Workspace) serviceBase(service string, probs *problem.List) string {
	w.problems(probs)
	host := w.APIHost
	if host == "" {
		if w.Region == "" {
			probs.Add("workspace.region", "missing: the workspace's region (or api_host), to reach the workspace service API")
			return ""
		}
		host = "https://" + url.PathEscape(w.Region) + ".api.azureml.ms"
	}
	host, err := checkHost(host)
	if err != nil {
		probs.Add("workspace.api_host", "%v", err)
		return ""
	}
	return host + "/modelmanagement/v1.0" + w.armPath() + "/services/" + url.PathEscape(service)
}

// endpointURL returns
// {management_host}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}/onlineEndpoints/{name}/{action}?api-version={v},
// recording problems at paths relative to the auth section.
func (w Workspace) endpointURL(endpoint, action, apiVersion string, probs *problem.List) string {
	w.problems(probs)
	host := w.ManagementHost
	if host == "" {
		host = DefaultManagementHost
	}
	host, err := checkHost(host)
	if err != nil {
		probs.Add("workspace.management_host", "%v", err)
		return ""
	}
	if apiVersion == "" {
		apiVersion = DefaultAPIVersion
	}
	return host + w.armPath() + "/onlineEndpoints/" + url.PathEscape(endpoint) + "/" + action +
		"?api-version=" + url.QueryEscape(apiVersion)
}

func (w Workspace) armPath() string {
	return "/subscriptions/" + url.PathEscape(w.SubscriptionID) +
		"/resourceGroups/" + url.PathEscape(w.ResourceGroup) +
		"/providers/Microsoft.MachineLearningServices/workspaces/" + url.PathEscape(w.Name)
}

// checkHost validates a control-plane host and strips a trailing slash. The
// gateway sends its ARM token there, so it must be https (plain http only to
// loopback, which tests use: httpx.SecureURL), and scheme and host only.
func checkHost(host string) (string, error) {
	u, err := httpx.SecureURL(host)
	if err != nil {
		return "", fmt.Errorf("%w: the gateway sends its Azure AD token there", err)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q: want a scheme and host only, like https://management.azure.com", host)
	}
	return strings.TrimSuffix(host, "/"), nil
}

// needCredential records a missing gateway identity.
func needCredential(cred azcore.TokenCredential, probs *problem.List) {
	if cred == nil {
		probs.Add("credential", "missing: the gateway's Azure credential (name one of the credentials: entries)")
	}
}

// controlPlane posts to an Azure control plane with the gateway's Azure AD
// token.
type controlPlane struct {
	cred      azcore.TokenCredential
	scope     string
	http      *http.Client
	workspace string
	name      string // upstream name, for hints
}

// operation describes one control-plane call for errors and hints.
type operation struct {
	name   string // "get aml service token"
	target string // "service \"churn\""
	action string // what the role must allow, for 403 hints
}

func newHTTPClient(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return &http.Client{Timeout: 30 * time.Second}
}

// post sends an empty POST to u with the gateway's token and decodes a
// 200/201 JSON answer into out.
func (c *controlPlane) post(ctx context.Context, op operation, u string, out any) error {
	at, err := c.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{c.scope}})
	if err != nil {
		return fmt.Errorf("credential: %s: get the gateway's Azure AD token for %s: %w", op.name, c.scope, err)
	}
	if at.Token == "" {
		return fmt.Errorf("credential: %s: the gateway's Azure AD token for %s is empty", op.name, c.scope)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, http.NoBody)
	if err != nil {
		return fmt.Errorf("credential: %s: %w", op.name, err)
	}
	req.Header.Set("Authorization", "Bearer "+at.Token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "modelgate")
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error carries method and URL, which hold no secrets.
		return fmt.Errorf("credential: %s: %w", op.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxControlPlaneBody))
	if err != nil {
		return fmt.Errorf("credential: %s: POST %s: read response: %w", op.name, u, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return c.newError(op, u, resp, body, at.Token)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("credential: %s: POST %s: decode %d response: %w", op.name, u, resp.StatusCode, err)
	}
	return nil
}

// ControlPlaneError is a failed call to the AML workspace API or ARM. It
// carries the status and the Azure error code and message
// ({"error":{"code","message"}}), never a token. Fix says what to change
// for the failures a person must fix (401, 403, 404).
type ControlPlaneError struct {
	// Op is what the gateway was doing, e.g. "get aml service token".
	Op string
	// URL is the request URL (no credentials in it).
	URL string
	// StatusCode is the HTTP status.
	StatusCode int
	// Code and Message come from the Azure error body, when it had one.
	Code    string
	Message string
	// RequestID is x-ms-request-id (or the correlation id), for support.
	RequestID string
	// Fix is a hint for the operator, empty for transient failures.
	Fix string
}

func (e *ControlPlaneError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "credential: %s: POST %s: %d %s", e.Op, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request id %s)", e.RequestID)
	}
	if e.Fix != "" {
		fmt.Fprintf(&b, "; fix: %s", e.Fix)
	}
	return b.String()
}

// Temporary reports whether retrying later may succeed (429 and 5xx).
func (e *ControlPlaneError) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

type azureErrorBody struct {
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	// The workspace service API sometimes answers with top-level fields.
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (c *controlPlane) newError(op operation, u string, resp *http.Response, body []byte, token string) *ControlPlaneError {
	e := &ControlPlaneError{Op: op.name, URL: u, StatusCode: resp.StatusCode}
	for _, h := range []string{"x-ms-request-id", "x-ms-correlation-request-id", "x-request-id"} {
		if v := resp.Header.Get(h); v != "" {
			e.RequestID = v
			break
		}
	}
	var ab azureErrorBody
	if json.Unmarshal(body, &ab) == nil {
		if ab.Error != nil {
			e.Code, e.Message = ab.Error.Code, ab.Error.Message
		} else {
			e.Code, e.Message = ab.Code, ab.Message
		}
	} else if t := bytes.TrimSpace(body); len(t) > 0 {
		e.Message = string(t)
	}
	// Defence in depth: a service echoing the request must not put the
	// gateway's token into an error that ends up in logs and /readyz.
	if token != "" {
		e.Message = strings.ReplaceAll(e.Message, token, redact.Redacted)
	}
	if len(e.Message) > 512 {
		e.Message = e.Message[:512] + "…"
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		e.Fix = fmt.Sprintf("the control plane did not accept the gateway's Azure AD token: check that the gateway's credential belongs to the subscription's tenant and that scope %q is right for this host", c.scope)
	case http.StatusForbidden:
		e.Fix = fmt.Sprintf("assign the gateway's identity a role on workspace %q that allows it to %s, for example AzureML Data Scientist or a custom role with that action (role assignments take a few minutes to apply)", c.workspace, op.action)
	case http.StatusNotFound:
		e.Fix = fmt.Sprintf("check the workspace's subscription_id, resource_group and name, the %s, and the host (region, api_host or management_host)", op.target)
	}
	return e
}

// unixTime decodes the control plane's times: integer (or numeric string)
// Unix seconds, or an RFC 3339 string.
type unixTime time.Time

func (t *unixTime) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*t = unixTime{}
		return nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		*t = unixTime(time.Unix(int64(f), 0).UTC())
		return nil
	}
	tt, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("time %q: want Unix seconds or RFC 3339", s)
	}
	*t = unixTime(tt)
	return nil
}

func (t unixTime) time() time.Time { return time.Time(t) }
