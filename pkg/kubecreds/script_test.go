package kubecreds

import (
	"reflect"
	"testing"
)

func TestDetectScript(t *testing.T) {
	decodes := []string{
		`echo $KUBECONFIG | base64 --decode > kubeconfig`,
		`echo "$KUBECONFIG" | base64 -d > kubeconfig`,
		`echo ${KUBECONFIG} | base64 -d >kubeconfig`,
		`printf '%s' "$KUBECONFIG" | base64 --decode > "$CI_PROJECT_DIR/kubeconfig"`,
		`base64 -d <<< "$KUBECONFIG" > $(pwd)/kubeconfig`,
		`echo $KUBECONFIG | base64 -di | tee kubeconfig > /dev/null`,
		`cat <<< $KUBECONFIG | base64 -D > ./kubeconfig`,
	}
	for _, line := range decodes {
		u := DetectScript([]string{"docker info", line, "export KUBECONFIG=$(pwd)/kubeconfig", "kubectl apply -f deployment.yml"}, "KUBECONFIG")
		if !u.Decodes {
			t.Errorf("%q: not detected", line)
			continue
		}
		if want := []string{line, "export KUBECONFIG=$(pwd)/kubeconfig"}; !reflect.DeepEqual(u.Redundant, want) {
			t.Errorf("%q: redundant %q", line, u.Redundant)
		}
		if got := u.CleanupPaths("/builds/t/0/group/app"); !reflect.DeepEqual(got, []string{"/builds/t/0/group/app/kubeconfig"}) {
			t.Errorf("%q: cleanup paths %q (paths %q)", line, got, u.Paths)
		}
	}
	for _, line := range []string{
		`echo $KUBECONFIG_OTHER | base64 -d > x`,
		`echo $KUBECONFIG | base64 > encoded`,
		`kubectl --kubeconfig $KUBECONFIG get pods`,
		`# echo $KUBECONFIG | base64 -d > kubeconfig`,
	} {
		if u := DetectScript([]string{line}, "KUBECONFIG"); u.Decodes {
			t.Errorf("%q: detected as a decode", line)
		}
	}
	// Renamed variable.
	if u := DetectScript([]string{`echo $DEPLOY_CFG | base64 -d > k`}, "DEPLOY_CFG"); !u.Decodes {
		t.Error("renamed variable not detected")
	}
}

func TestCleanupPathsStayInProject(t *testing.T) {
	u := ScriptUse{Paths: []string{"../escape", "/etc/passwd", "$HOME/.kube/config", "~/.kube/config", "sub/kc", "/builds/p/kc", "."}}
	got := u.CleanupPaths("/builds/p")
	if want := []string{"/builds/p/sub/kc", "/builds/p/kc"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestDetectClusterSetup(t *testing.T) {
	script := []string{
		`kubectl config set-cluster k8s --server="$KUBE_URL" --certificate-authority="$KUBE_CA_PEM_FILE"`,
		`kubectl config set-credentials gitlab --token="$KUBE_TOKEN"`,
		`kubectl config set-context default --cluster=k8s --user=gitlab`,
		`kubectl config use-context default`,
		`kubectl apply -f kubernetes`,
	}
	u := DetectScript(script, "KUBECONFIG")
	if u.Decodes || !u.SelectsContext {
		t.Fatalf("%+v", u)
	}
	// set-context names no variable, but use-context does the selecting.
	if want := []string{script[0], script[1], script[3]}; !reflect.DeepEqual(u.Redundant, want) {
		t.Fatalf("redundant %q", u.Redundant)
	}
}
