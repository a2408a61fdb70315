package stages_test

import (
	"encoding/base64"
	"strings"
	"testing"
)

// TestCleanupFileVariablesRedacted: since 19.3 the runner's
// cleanup_file_variables script exports every job variable (and reads
// GITLAB_ENV back) like the other stages, so whatever that stage prints
// goes through ferry's masking like theirs: a masked value and its encoded
// forms, whole or split across writes, on stdout and stderr.
func TestCleanupFileVariablesRedacted(t *testing.T) {
	j := newJob(t, "")
	secret := "cfv-Masked-Value-0193"
	j.vars["DEPLOY_PASSWORD"] = secret
	j.writePayload(3600, nil)
	j.mustPrepare()
	if err := j.state().AddSecrets(secret); err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString([]byte(secret))
	// What 19.3's stage does, plus a leak: the exports, the GITLAB_ENV
	// read-back, then the value printed in every way.
	body := "export DEPLOY_PASSWORD=" + secret + "\n" +
		`export GITLAB_ENV="$TMPDIR/gitlab_runner_env"; touch "$GITLAB_ENV"; while read -r line; do export "$line"; done < "$GITLAB_ENV"` + "\n" +
		`echo "out $DEPLOY_PASSWORD"; echo "err $DEPLOY_PASSWORD" >&2; echo "enc ` + b64 + `"; printf %s "${DEPLOY_PASSWORD:0:5}"; printf '%s\n' "${DEPLOY_PASSWORD:5}"; env | grep DEPLOY_PASSWORD`
	r := j.ferry("run", j.script(body), "cleanup_file_variables")
	all := r.stdout + r.stderr
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, all)
	}
	if strings.Contains(all, secret) || strings.Contains(all, b64) {
		t.Errorf("the masked value leaked in cleanup_file_variables:\n%s", all)
	}
	if n := strings.Count(all, "[MASKED]"); n < 5 {
		t.Errorf("%d masks, want 5:\n%s", n, all)
	}
}
