package deploytest

import (
	"net/netip"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// set decodes a multi-document YAML fixture the way RenderDir decodes a render.
func set(t *testing.T, docs string) *Set {
	t.Helper()
	s := &Set{Dir: "fixture"}
	for _, d := range strings.Split(docs, "\n---\n") {
		var tm struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal([]byte(d), &tm); err != nil {
			t.Fatal(err)
		}
		gv, err := schema.ParseGroupVersion(tm.APIVersion)
		if err != nil {
			t.Fatal(err)
		}
		o, err := Decode([]byte(d), gv.WithKind(tm.Kind))
		if err != nil {
			t.Fatalf("fixture: %v", err)
		}
		s.Objects = append(s.Objects, o)
	}
	return s
}

// wantProblems asserts that exactly the expected problems were found, each
// matched by a substring.
func wantProblems(t *testing.T, got []error, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d problems %v, want %d matching %q", len(got), got, len(want), want)
		return
	}
	for i, w := range want {
		if !strings.Contains(got[i].Error(), w) {
			t.Errorf("problem %d = %q, want it to mention %q", i, got[i], w)
		}
	}
}

const goodPod = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: web
          image: web:1.0
          imagePullPolicy: IfNotPresent
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /, port: http}}
          env:
            - name: TOKEN
              valueFrom: {secretKeyRef: {name: web-token, key: token}}
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: conf, mountPath: /etc/web/web.yml, subPath: web.yml}]
      volumes:
        - name: conf
          configMap: {name: web-conf}`

const goodConf = `apiVersion: v1
kind: ConfigMap
metadata: {name: web-conf}
data: {web.yml: "x: 1"}`

func TestDecodeIsStrict(t *testing.T) {
	for name, tc := range map[string]struct {
		doc  string
		gvk  schema.GroupVersionKind
		want string
	}{
		"unknown field":     {"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selektor: {a: b}}", schema.GroupVersionKind{Version: "v1", Kind: "Service"}, "unknown field"},
		"misplaced field":   {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {a: b}}\nlabels: {a: b}", schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, "unknown field"},
		"duplicate field":   {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\ndata: {c: d}", schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, "already set"},
		"wrong type":        {"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: http}]}", schema.GroupVersionKind{Version: "v1", Kind: "Service"}, "port"},
		"unregistered kind": {"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}", schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}, "no API type"},
		"no name":           {"apiVersion: v1\nkind: ConfigMap\nmetadata: {}", schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, "name is empty"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode([]byte(tc.doc), tc.gvk)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Decode: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestCheckRestricted(t *testing.T) {
	s := set(t, goodPod)
	problems, err := CheckRestricted(s.PodTemplates())
	if err != nil {
		t.Fatal(err)
	}
	wantProblems(t, problems)

	bad := strings.Replace(goodPod, "runAsNonRoot: true, ", "", 1)
	bad = strings.Replace(bad, "drop: [ALL]", "drop: [NET_RAW]", 1)
	problems, err = CheckRestricted(set(t, bad).PodTemplates())
	if err != nil {
		t.Fatal(err)
	}
	wantProblems(t, problems, "unrestricted capabilities", "runAsNonRoot")
}

func TestCheckReferences(t *testing.T) {
	user := UserSecrets{"web-token": {"token"}}
	wantProblems(t, CheckReferences(set(t, goodPod+"\n---\n"+goodConf), user))

	wantProblems(t, CheckReferences(set(t, goodPod), user), "ConfigMap web-conf, which is not rendered")
	wantProblems(t, CheckReferences(set(t, goodPod+"\n---\n"+goodConf), UserSecrets{}), "neither rendered nor in the documented")
	wantProblems(t, CheckReferences(set(t, goodPod+"\n---\n"+goodConf), UserSecrets{"web-token": {"password"}}), `key "token" of Secret web-token`)

	items := strings.Replace(goodPod, "configMap: {name: web-conf}", "configMap: {name: web-conf, items: [{key: other.yml, path: web.yml}]}", 1)
	wantProblems(t, CheckReferences(set(t, items+"\n---\n"+goodConf), user), `key "other.yml" of ConfigMap web-conf`)

	noVol := strings.Replace(goodPod, "name: conf, mountPath", "name: config, mountPath", 1)
	wantProblems(t, CheckReferences(set(t, noVol+"\n---\n"+goodConf), user), "mounts volume config, which the pod does not define")
}

func TestCheckBinding(t *testing.T) {
	pv := `apiVersion: v1
kind: PersistentVolume
metadata: {name: pv1}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  hostPath: {path: /x}`
	pvc := func(extra string) string {
		return "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec:\n  volumeName: pv1\n  resources: {requests: {storage: 2Gi}}\n  accessModes: [ReadWriteMany]\n" + extra
	}
	wantProblems(t, CheckReferences(set(t, pv+"\n---\n"+pvc("  storageClassName: \"\"")), nil),
		"access mode ReadWriteMany", "requests 2Gi")
	wantProblems(t, CheckReferences(set(t, pv+"\n---\n"+pvc("")), nil),
		"storageClassName unset", "access mode", "requests")
}

func TestCheckPorts(t *testing.T) {
	svc := func(target string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: " + target + "}]"
	}
	wantProblems(t, CheckPorts(set(t, goodPod+"\n---\n"+svc("http"))))
	wantProblems(t, CheckPorts(set(t, goodPod+"\n---\n"+svc("8080"))))
	wantProblems(t, CheckPorts(set(t, goodPod+"\n---\n"+svc("metrics"))), "targetPort metrics is not a port of Deployment/web")

	wrongProbe := strings.Replace(goodPod, "port: http}", "port: 9090}", 1)
	wantProblems(t, CheckPorts(set(t, wrongProbe)), "readinessProbe port 9090")

	np := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 9090}]}]`
	wantProblems(t, CheckPorts(set(t, goodPod+"\n---\n"+np)), "ingress port 9090 is not a port of selected Deployment/web")
}

func TestCheckSelectors(t *testing.T) {
	svc := "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: webb}\n  ports: [{port: 80}]"
	wantProblems(t, CheckPorts(set(t, goodPod+"\n---\n"+svc)), "matches no pod template")
	np := "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]"
	wantProblems(t, CheckSelectors(set(t, goodPod+"\n---\n"+np)), "peer podSelector app=client matches no pod")
}

func TestCheckWorkloads(t *testing.T) {
	cj := `apiVersion: batch/v1
kind: CronJob
metadata: {name: cj}
spec:
  schedule: "61 * * * *"
  timeZone: Mars/Olympus
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: "tool:latest", imagePullPolicy: Always}]`
	wantProblems(t, CheckWorkloads(set(t, cj)), "schedule", "timeZone", "imagePullPolicy Always", "fixed tag")
	wantProblems(t, CheckWorkloads(set(t, goodPod)))
}

func TestMountedFile(t *testing.T) {
	p := set(t, goodPod).PodTemplates()[0]
	src, err := MountedFile(p, "web", "/etc/web/web.yml")
	if err != nil || src.Volume.Name != "conf" || src.Key != "web.yml" {
		t.Errorf("MountedFile = %+v, %v; want key web.yml of volume conf", src, err)
	}
	if _, err := MountedFile(p, "web", "/etc/web/other.yml"); err == nil {
		t.Error("a file beside a subPath mount was resolved")
	}
}

func TestParseSecretsTable(t *testing.T) {
	md := "| Secret | keys | notes |\n|---|---|---|\n| `a` | `k1`, `k2` | x |\n| `b` | `k` | `code` in notes |\n| not code | `k` | |\n| `c` | two words | |\n"
	got := ParseSecretsTable(md)
	if len(got) != 2 || strings.Join(got["a"], ",") != "k1,k2" || strings.Join(got["b"], ",") != "k" {
		t.Errorf("ParseSecretsTable = %v", got)
	}
}

func TestAllowed(t *testing.T) {
	policies := set(t, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: ns}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-in, namespace: ns}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from:
        - podSelector: {matchLabels: {app: api}}
        - namespaceSelector: {matchLabels: {team: ops}}
          podSelector: {matchLabels: {app: backup}}
      ports: [{port: db}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-out, namespace: ns}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {app: db}}}]
      ports: [{port: 5432}]
    - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
      ports: [{port: 443, endPort: 444}]`)
	var nps = policies.NetworkPolicies()
	pod := func(ns string, nsLabels map[string]string, kv ...string) Endpoint {
		return Endpoint{Namespace: ns, NamespaceLabels: nsLabels, Labels: Labels(kv...), Ports: map[string]int32{"db": 5432}}
	}
	ns := Labels("kubernetes.io/metadata.name", "ns")
	api, db := pod("ns", ns, "app", "api"), pod("ns", ns, "app", "db")
	ops := Labels("team", "ops")
	for _, tc := range []struct {
		name string
		f    Flow
		want bool
	}{
		{"allowed both ways, named port", Flow{From: api, To: db, Port: 5432}, true},
		{"wrong port", Flow{From: api, To: db, Port: 5433}, false},
		{"UDP not allowed", Flow{From: api, To: db, Port: 5432, Protocol: "UDP"}, false},
		{"db has no egress", Flow{From: db, To: api, Port: 8080}, false},
		{"backup in ops namespace: ingress ok, egress unrestricted", Flow{From: pod("other", ops, "app", "backup"), To: db, Port: 5432}, true},
		{"backup label in a non-ops namespace", Flow{From: pod("other", Labels("team", "dev"), "app", "backup"), To: db, Port: 5432}, false},
		{"other pod in ops namespace", Flow{From: pod("other", ops, "app", "shell"), To: db, Port: 5432}, false},
		{"api pod label in another namespace (podSelector alone is namespace-local)", Flow{From: pod("other", nil, "app", "api"), To: db, Port: 5432}, false},
		{"egress to the internet in the port range", Flow{From: api, To: Endpoint{External: netip.MustParseAddr("198.51.100.1")}, Port: 444}, true},
		{"egress to an excepted range", Flow{From: api, To: Endpoint{External: netip.MustParseAddr("10.1.2.3")}, Port: 443}, false},
		{"outside to an unselected namespace", Flow{From: Endpoint{External: netip.MustParseAddr("198.51.100.1")}, To: pod("free", nil, "app", "x"), Port: 80}, true},
	} {
		got, err := Allowed(nps, "ns", tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: allowed=%v, want %v", tc.name, got, tc.want)
		}
	}
}
