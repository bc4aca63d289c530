// vcsim for imgbake's test bed: govmomi's vCenter simulator (default VPX model) on a loopback port.
// Built offline by tests/bed/install.sh from Debian's golang-github-vmware-govmomi-dev.
// Prints "LISTEN https://127.0.0.1:PORT/sdk" on stdout once it serves; -requests FILE gets one
// line per SOAP request: the method name (the first element inside the SOAP Body).
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// playCloudInit does for the bed's sshd what cloud-init's VMware datasource would do in a real guest:
// before a PowerOnVM_Task is answered, the host key and the login key in the VM's
// guestinfo.userdata (imgbake's base64 cloud-config) go into hostKeyFile and authKeysFile.
func playCloudInit(next http.Handler, c *vim25.Client, hostKeyFile, authKeysFile string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if vm := poweredOn(body); vm != "" {
				if err := installKeys(c, vm, hostKeyFile, authKeysFile); err != nil {
					log.Printf("playing cloud-init for %s: %v", vm, err)
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// poweredOn is the VM a PowerOnVM_Task request is for, or "".
func poweredOn(body []byte) string {
	d := xml.NewDecoder(bytes.NewReader(body))
	inCall := false
	for tok, err := d.Token(); err == nil; tok, err = d.Token() {
		if el, ok := tok.(xml.StartElement); ok {
			inCall = inCall || el.Name.Local == "PowerOnVM_Task"
			if inCall && el.Name.Local == "_this" {
				var v string
				if d.DecodeElement(&v, &el) == nil {
					return strings.TrimSpace(v)
				}
			}
		}
	}
	return ""
}

func installKeys(c *vim25.Client, vm, hostKeyFile, authKeysFile string) error {
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: vm}
	var m mo.VirtualMachine
	if err := property.DefaultCollector(c).RetrieveOne(context.Background(), ref, []string{"config.extraConfig"}, &m); err != nil {
		return err
	}
	if m.Config == nil {
		return nil
	}
	ud := "" // a key set twice is listed twice: the last value counts
	for _, o := range m.Config.ExtraConfig {
		if v := o.GetOptionValue(); v.Key == "guestinfo.userdata" {
			if s, ok := v.Value.(string); ok {
				ud = s
			}
		}
	}
	raw, err := base64.StdEncoding.DecodeString(ud)
	if err != nil || len(raw) == 0 {
		return err
	}
	text := string(raw)
	const keyStart, loginStart = "  ed25519_private: |\n", "ssh_authorized_keys:\n  - "
	if i := strings.Index(text, keyStart); i >= 0 {
		var key []string
		for _, l := range strings.Split(text[i+len(keyStart):], "\n") {
			if !strings.HasPrefix(l, "    ") {
				break
			}
			key = append(key, strings.TrimPrefix(l, "    "))
		}
		if err := os.WriteFile(hostKeyFile, []byte(strings.Join(key, "\n")+"\n"), 0o600); err != nil {
			return err
		}
	}
	if i := strings.Index(text, loginStart); i >= 0 {
		line := strings.SplitN(text[i+len(loginStart):], "\n", 2)[0]
		f, err := os.OpenFile(authKeysFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.WriteString(line + "\n"); err != nil {
			return err
		}
	}
	return nil
}

// logRequests appends the SOAP method name of each POST (the first element inside the Body) to f.
func logRequests(next http.Handler, f *os.File) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			name, inBody := "?", false
			d := xml.NewDecoder(bytes.NewReader(body))
			for tok, err := d.Token(); err == nil; tok, err = d.Token() {
				if el, ok := tok.(xml.StartElement); ok {
					if inBody {
						name = el.Name.Local
						break
					}
					inBody = el.Name.Local == "Body"
				}
			}
			mu.Lock()
			_, _ = f.WriteString(name + "\n") // unbuffered: on disk before the answer
			mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	cert := flag.String("cert", "", "TLS certificate (PEM); without -cert/-key: plain HTTP")
	key := flag.String("key", "", "TLS private key (PEM)")
	user := flag.String("username", "user", "the only user name Login accepts")
	pass := flag.String("password", "pass", "its password")
	requests := flag.String("requests", "", "append each SOAP request's method name to this file")
	templates := flag.String("template", "", "comma-separated VM names to power off and mark as templates")
	hostKey := flag.String("cloud-init-host-key", "", "on power-on, write the host key of the VM's guestinfo.userdata here")
	authKeys := flag.String("cloud-init-authorized-keys", "", "on power-on, append its login key here")
	flag.Parse()

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("creating the model: %v", err)
	}
	defer model.Remove()
	ctx := context.Background()
	c, err := vim25.NewClient(ctx, model.Service) // in-process: not seen by -requests
	if err != nil {
		log.Fatal(err)
	}
	finder := find.NewFinder(c, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		log.Fatal(err)
	}
	finder.SetDatacenter(dc)
	for _, name := range strings.FieldsFunc(*templates, func(r rune) bool { return r == ',' }) {
		vm, err := finder.VirtualMachine(ctx, name)
		if err != nil {
			log.Fatalf("-template %s: %v", name, err)
		}
		if state, _ := vm.PowerState(ctx); state != types.VirtualMachinePowerStatePoweredOff {
			if task, err := vm.PowerOff(ctx); err != nil || task.Wait(ctx) != nil {
				log.Fatalf("-template %s: powering off failed", name)
			}
		}
		if err := vm.MarkAsTemplate(ctx); err != nil {
			log.Fatalf("-template %s: %v", name, err)
		}
	}

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	if *cert != "" || *key != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatalf("loading -cert/-key: %v", err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	server := model.Service.NewServer() // listening and serving when it returns
	defer server.Close()
	if *requests != "" {
		f, err := os.OpenFile(*requests, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		// NewServer already serves, but nobody knows the port before the LISTEN line below.
		server.Config.Handler = logRequests(server.Config.Handler, f)
	}
	if *hostKey != "" && *authKeys != "" {
		server.Config.Handler = playCloudInit(server.Config.Handler, c, *hostKey, *authKeys)
	}
	u := *server.URL
	u.User = nil
	fmt.Printf("LISTEN %s\n", u.String())
	stop := make(chan os.Signal, 1) // SIGTERM/SIGINT: close, remove the datastore temp dirs
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
}
