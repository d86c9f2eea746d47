/** The lineage graph's layout, computed by dagre: runs as boxes, parents above children, merges with several parents. Pure. */
import dagre from '@dagrejs/dagre';
import type { RunPayload } from '../../src/protocol/types';

export interface NodeBox {
  id: string;
  x: number;
  y: number;
  width: number;
  height: number;
}
export interface EdgePath {
  from: string;
  to: string;
  points: { x: number; y: number }[];
}

/** Positions of runs and their parent edges (parents above children). */
export function layoutLineage(runs: readonly RunPayload[]): { nodes: NodeBox[]; edges: EdgePath[]; width: number; height: number } {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 24, ranksep: 36, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  const ids = new Set(runs.map((r) => r.id));
  for (const r of runs) g.setNode(r.id, { width: Math.max(90, 7 * r.name.length + 20), height: 34 });
  for (const r of runs) for (const p of r.parents) if (ids.has(p.id)) g.setEdge(p.id, r.id);
  dagre.layout(g);
  const nodes = g.nodes().map((id) => {
    const n = g.node(id);
    return { id, x: n.x, y: n.y, width: n.width, height: n.height };
  });
  const edges = g.edges().map((e) => ({ from: e.v, to: e.w, points: g.edge(e).points ?? [] }));
  const gr = g.graph();
  return { nodes, edges, width: gr.width ?? 0, height: gr.height ?? 0 };
}

