//! The status page served at `/`: one self-contained HTML document (no
//! external assets, works offline) that fetches `/status` every two seconds
//! and draws the ring as an SVG circle — this node, its predecessor,
//! successors and fingers, placed by Node-ID, and the keys it holds — with
//! the node's counters, the users whose bindings it holds, (on a
//! gateway) the live gateways of each domain and the TURN servers the
//! ring advertises beside it.

/// The page. Each drawn node is an SVG `circle` with class `node` and a
/// `data-addr`; the browser test counts them.
pub const HTML: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>p2psip node</title>
<style>
body{font:14px system-ui,sans-serif;margin:1em;color:#222;display:flex;gap:2em;flex-wrap:wrap}
svg{width:460px;height:460px}
circle.node{stroke:#333;stroke-width:1}
circle.me{fill:#d33}circle.predecessor{fill:#36c}circle.successor{fill:#3a3}circle.finger{fill:#ccc}
circle.key{fill:#f90;stroke:none}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}
.err{color:#b00}
</style></head><body>
<div><h1>p2psip node <span id="addr"></span></h1>
<svg id="ring" viewBox="-230 -230 460 460" role="img" aria-label="the ring">
<circle r="190" fill="none" stroke="#999"/></svg>
<p><span style="color:#d33">&#9679;</span> this node <span style="color:#36c">&#9679;</span> predecessor
<span style="color:#3a3">&#9679;</span> successors <span style="color:#aaa">&#9679;</span> fingers
<span style="color:#f90">&#9679;</span> keys held</p></div>
<div><h2>Counters</h2><table id="counters"></table>
<h2>Neighbours</h2><table id="peers"></table>
<h2>Users held</h2><table id="users"></table>
<h2>Gateways (DNS records published)</h2><table id="gateways"></table>
<h2>TURN servers (from the ring, best first)</h2><table id="turn"></table>
<p id="error" class="err"></p></div>
<script>
"use strict";
const NS="http://www.w3.org/2000/svg";
let last=null;
function angle(id){return parseInt(id.slice(0,8),16)/4294967296*2*Math.PI;}
function dot(svg,id,r,cls,addr){
  const a=angle(id),c=document.createElementNS(NS,"circle");
  c.setAttribute("cx",(190*Math.sin(a)).toFixed(1));c.setAttribute("cy",(-190*Math.cos(a)).toFixed(1));
  c.setAttribute("r",r);c.setAttribute("class",cls);
  if(addr){c.setAttribute("data-addr",addr);const t=document.createElementNS(NS,"title");t.textContent=addr+" "+id;c.appendChild(t);}
  svg.appendChild(c);
}
function row(t,k,v){const r=t.insertRow();r.insertCell().textContent=k;r.insertCell().textContent=v;}
function draw(s){
  document.getElementById("addr").textContent=s.addr||"";
  const svg=document.getElementById("ring");
  svg.querySelectorAll("circle.node,circle.key").forEach(n=>n.remove());
  for(const k of (s.keys||[]))dot(svg,k,3,"key");
  const seen=new Map();
  const add=(p,role)=>{if(p&&!seen.has(p.addr))seen.set(p.addr,[p.id,role]);};
  add({id:s.node_id,addr:s.addr},"me");add(s.predecessor,"predecessor");
  (s.successors||[]).forEach(p=>add(p,"successor"));(s.fingers||[]).forEach(p=>add(p,"finger"));
  for(const [addr,[id,role]] of seen)dot(svg,id,role==="me"?9:7,"node "+role,addr);
  const ct=document.getElementById("counters");ct.innerHTML="";
  const now=Date.now();
  for(const k of ["uptime_s","registrations","transactions","forks","items_primary","items_replica","pending_requests"])row(ct,k,s[k]);
  const o=s.overlay||{};
  for(const k of Object.keys(o).sort()){
    let v=o[k];
    if(last&&typeof v==="number"&&typeof last.o[k]==="number"){v+=" ("+((v-last.o[k])*1000/(now-last.t)).toFixed(1)+"/s)";}
    row(ct,"overlay."+k,v);
  }
  last={o:o,t:now};
  const pt=document.getElementById("peers");pt.innerHTML="";
  for(const [addr,[id,role]] of seen)row(pt,role,addr+"  "+id.slice(0,10));
  const ut=document.getElementById("users");ut.innerHTML="";
  for(const u of (s.users||[])){row(ut,u.aor,u.held_as);ut.rows[ut.rows.length-1].className="user";}
  const gt=document.getElementById("gateways");gt.innerHTML="";
  for(const d of (s.gateways||[]))for(const g of (d.gateways||[])){
    const ports=["udp","tcp","tls"].filter(t=>g[t]).map(t=>t+" "+g[t]).join(", ");
    row(gt,d.domain,g.name+"  "+g.addr+"  "+ports);gt.rows[gt.rows.length-1].className="gateway";
  }
  const tt=document.getElementById("turn");tt.innerHTML="";
  for(const t of ((s.turn_relays||{}).relays||[])){
    const rtt=t.rtt_ms==null?"rtt ?":"rtt "+t.rtt_ms.toFixed(1)+" ms";
    row(tt,t.turn,t.realm+"  "+rtt+"  "+t.allocations+"/"+t.max_allocations+" allocations");
    tt.rows[tt.rows.length-1].className="turn";
  }
  document.getElementById("error").textContent="";
}
async function tick(){
  try{const r=await fetch("status",{cache:"no-store"});draw(await r.json());}
  catch(e){document.getElementById("error").textContent="no answer from the node: "+e;}
}
tick();setInterval(tick,2000);
</script></body></html>
"##;
