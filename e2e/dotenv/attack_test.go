package dotenv_test

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/ferry-ci/ferry/internal/runnerdriver"
	"gitlab.com/ferry-ci/ferry/pkg/dotenvstore"
	"gitlab.com/ferry-ci/ferry/pkg/dotenvstore/kubestore"
)

// TestKubeStoreTamperedReportRefused: with the Kubernetes store, a job that
// got hold of the store's credentials rewrites kaniko's report Secret
// between kaniko and kube (here the harness acts for it, through the API,
// when the attacker job says so). kube must not get the attacker's IMAGE:
// one line names kaniko's report as refused. Unix permissions play no part
// in this store, so the test runs as the test's own user.
func TestKubeStoreTamperedReportRefused(t *testing.T) {
	ctx := ctxT(t)
	kc := storeKubeconfig(t)
	base := t.TempDir()
	d, err := runnerdriver.New(runnerdriver.Config{
		FerryBinary: ferryBinary(t), BaseDir: base, PrepareAttempts: 1,
		ExtraArgs: []string{"--state-dir=" + base + "/state", "--kube-sources=none",
			"--dotenv-store=kubernetes", "--dotenv-kubeconfig=" + kc, "--dotenv-namespace=ferry-dotenv"},
		Env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base, "LANG=C.UTF-8"},
	})
	if err != nil {
		t.Fatal(err)
	}
	api := c.Client().CoreV1().Secrets("ferry-dotenv")
	var once sync.Once
	var tamperErr error
	tampered := ""
	tamper := func() {
		list, err := api.List(ctx, metav1.ListOptions{LabelSelector: kubestore.LabelManagedBy + "=" + kubestore.ManagedByValue})
		if err != nil {
			tamperErr = err
			return
		}
		for _, sec := range list.Items {
			raw := sec.Data["report.json"]
			if !bytes.Contains(raw, []byte("registry.example.com/good")) {
				continue
			}
			var r dotenvstore.Report
			if err := json.Unmarshal(raw, &r); err != nil {
				tamperErr = err
				return
			}
			r.Vars[0].Value = "registry.example.com/evil:1"
			b, _ := json.Marshal(r)
			sec.Data["report.json"] = b
			if _, err := api.Update(ctx, &sec, metav1.UpdateOptions{}); err != nil {
				tamperErr = err
				return
			}
			tampered = sec.Name
		}
	}
	pr := d.RunPipeline(ctx, runnerdriver.Pipeline{
		Stages: []string{"image", "attack", "deploy"},
		Jobs: []runnerdriver.Job{
			{Name: "kaniko", Stage: "image",
				Script:    []string{`echo "IMAGE=registry.example.com/good:$CI_COMMIT_SHORT_SHA" > docker.env`},
				Artifacts: []runnerdriver.Artifact{runnerdriver.DotenvReport("docker.env")}},
			{Name: "attacker", Stage: "attack", Script: []string{`echo "TAMPER-$((6*7))"`},
				OnLog: func(log []byte) bool {
					if bytes.Contains(log, []byte("TAMPER-42")) {
						once.Do(tamper)
					}
					return false
				}},
			{Name: "kube", Stage: "deploy", Needs: []runnerdriver.Need{{Job: "kaniko"}},
				Script: []string{`echo "image=[${IMAGE-unset}]"`}},
		},
	})
	if tamperErr != nil || tampered == "" {
		t.Fatalf("the attack did not happen: %v", tamperErr)
	}
	r := pr.Jobs["kube"]
	l := runnerdriver.StripANSI(r.Log)
	if strings.Contains(l, "evil") {
		t.Fatalf("the tampered value reached the consumer:\n%s", l)
	}
	refused := "the stored report of job " + itoa(pr.Jobs["kaniko"].ID) + " (kaniko) is refused"
	if r.Status != runnerdriver.StatusSuccess || strings.Count(l, refused) != 1 || !strings.Contains(l, "image=[unset]") {
		t.Errorf("kube: %s, want success without IMAGE and one line %q:\n%s", r.Status, refused, l)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
