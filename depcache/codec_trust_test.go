package depcache

import (
	"bytes"
	"encoding/gob"
	"sync/atomic"
	"testing"

	"github.com/depcache/go-depcache/backends/memory"
)

// trustProbe counts its instantiations by encoding/gob: a type registered
// with gob.Register, which stored bytes can name.
type trustProbe struct{ X int }

var trustProbeDecodes atomic.Int64

func (p trustProbe) GobEncode() ([]byte, error) { return []byte{byte(p.X)}, nil }
func (p *trustProbe) GobDecode(b []byte) error {
	trustProbeDecodes.Add(1)
	return nil
}

func init() { gob.Register(trustProbe{}) }

// The default codec is JSON, which decodes into the type the caller
// declared and never into one the bytes name: bytes that name a registered
// type (as gob's do) instantiate nothing. Gob does instantiate it when the
// destination is or holds an interface, which is why gob is for trusted
// data only (doc.go, "Security").
func TestDefaultCodecNeverInstantiatesStoredTypes(t *testing.T) {
	m := New(memory.New())
	defer m.Close()
	if m.cfg.codec != JSON {
		t.Fatalf("the default codec is %s, want json", m.cfg.codec.Name())
	}

	var named any = trustProbe{X: 7}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&named); err != nil {
		t.Fatal(err)
	}
	stored := buf.Bytes()

	trustProbeDecodes.Store(0)
	for _, dst := range []any{new(any), new(map[string]any), new(struct{ V any }), new(string), new(trustProbe)} {
		_ = JSON.Unmarshal(stored, dst)
	}
	var v any
	if err := JSON.Unmarshal([]byte(`{"X":7,"@type":"depcache.trustProbe"}`), &v); err != nil {
		t.Fatal(err)
	}
	if _, ok := v.(map[string]any); !ok {
		t.Errorf("JSON into any gave %T, want map[string]any", v)
	}
	if n := trustProbeDecodes.Load(); n != 0 {
		t.Fatalf("the default codec instantiated a type named by stored bytes %d times", n)
	}

	// Gob, by contrast, builds the type the bytes name.
	var got any
	if err := Gob.Unmarshal(stored, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got.(trustProbe); !ok || trustProbeDecodes.Load() != 1 {
		t.Errorf("gob into any gave %T after %d decodes; the test no longer shows what gob does", got, trustProbeDecodes.Load())
	}
}
