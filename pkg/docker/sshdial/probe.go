package sshdial

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Engine is what the preflight learned about the remote engine.
type Engine struct {
	Version    string // e.g. 20.10.24
	APIVersion string // e.g. 1.41
	Swarm      string // "swarm manager", "swarm worker" or "not a swarm member"
}

// Probe asks the engine for /version and /info over one dial-stdio
// connection, within timeout. A remote failure is classified from the
// remote command's exit and stderr.
func Probe(ctx context.Context, c *Client, timeout time.Duration) (Engine, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.DialDocker(ctx)
	if err != nil {
		return Engine{}, err
	}
	defer conn.Close()
	used := false
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return c.DialDocker(ctx)
			}
			used = true
			return conn, nil
		},
		DisableCompression: true,
	}}
	var v struct {
		Version    string
		APIVersion string `json:"ApiVersion"`
	}
	if err := getJSON(ctx, hc, "/version", &v); err != nil {
		if rerr := conn.RemoteError(2 * time.Second); rerr != nil {
			return Engine{}, rerr
		}
		return Engine{}, c.errorf(CauseOther, "%s: GET /version from the Docker engine at %s: %v", c.cfg.Names.Host, c.cfg.Target.String(), err)
	}
	var info struct {
		Swarm struct {
			LocalNodeState   string
			ControlAvailable bool
		}
	}
	if err := getJSON(ctx, hc, "/info", &info); err != nil {
		return Engine{}, c.errorf(CauseOther, "%s: GET /info from the Docker engine at %s: %v", c.cfg.Names.Host, c.cfg.Target.String(), err)
	}
	e := Engine{Version: v.Version, APIVersion: v.APIVersion, Swarm: "not a swarm member"}
	switch {
	case info.Swarm.LocalNodeState == "active" && info.Swarm.ControlAvailable:
		e.Swarm = "swarm manager"
	case info.Swarm.LocalNodeState == "active":
		e.Swarm = "swarm worker"
	case info.Swarm.LocalNodeState != "" && info.Swarm.LocalNodeState != "inactive":
		e.Swarm = "swarm " + info.Swarm.LocalNodeState
	}
	hc.CloseIdleConnections()
	return e, nil
}

func getJSON(ctx context.Context, hc *http.Client, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, lastLine(string(b)))
	}
	return json.Unmarshal(b, v)
}

// String is the preflight line's tail: "20.10.24 (API 1.41), swarm manager".
func (e Engine) String() string {
	return fmt.Sprintf("Docker %s (API %s)", e.Version, e.APIVersion)
}
