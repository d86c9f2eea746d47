/**
 * The runs of a session: a list (choose one to see its charts) and the
 * lineage graph, laid out by dagre (a run may have several parents: merges),
 * drawn as SVG. Test results of each run sit beside it.
 */
import type { RunPayload, TestPayload } from '../../src/protocol/types';
import { fmt } from './format';
import { layoutLineage } from './lineage';

const SVG = 'http://www.w3.org/2000/svg';

export class RunsView {
  private runs = new Map<string, RunPayload>();
  private tests: TestPayload[] = [];
  private selected: string | undefined;
  private list: HTMLElement;
  private graph: HTMLElement;
  private testList: HTMLElement;

  constructor(root: HTMLElement, private readonly onChoose: (run: string) => void) {
    const listBox = document.createElement('section');
    listBox.innerHTML = '<h3>Runs</h3>';
    this.list = document.createElement('ul');
    this.list.dataset.testid = 'runs';
    this.list.setAttribute('role', 'listbox');
    this.list.setAttribute('aria-label', 'Runs of this session');
    listBox.append(this.list);
    const graphBox = document.createElement('section');
    graphBox.innerHTML = '<h3>Lineage</h3>';
    this.graph = document.createElement('div');
    this.graph.dataset.testid = 'lineage';
    graphBox.append(this.graph);
    const testBox = document.createElement('section');
    testBox.innerHTML = '<h3>Test results</h3>';
    this.testList = document.createElement('table');
    this.testList.dataset.testid = 'tests';
    testBox.append(this.testList);
    root.append(listBox, graphBox, testBox);
  }

  clear(): void {
    this.runs.clear();
    this.tests = [];
    this.selected = undefined;
    this.render();
  }

  upsert(r: RunPayload): void {
    this.runs.set(r.id, r);
    this.render();
  }

  addTest(t: TestPayload): void {
    this.tests.push(t);
    this.renderTests();
  }

  setTests(t: TestPayload[]): void {
    this.tests = t;
    this.renderTests();
  }

  select(id: string | undefined): void {
    this.selected = id;
    this.render();
  }

  get all(): RunPayload[] {
    return [...this.runs.values()];
  }

  private render(): void {
    const runs = this.all;
    this.list.replaceChildren(
      ...runs.map((r) => {
        const li = document.createElement('li');
        const b = document.createElement('button');
        b.type = 'button';
        b.setAttribute('role', 'option');
        b.setAttribute('aria-selected', String(r.id === this.selected));
        b.dataset.run = r.id;
        b.textContent = `${r.name} · ${r.kind} · ${r.status}`;
        b.title = `Show the charts of run ${r.id}${r.parents.length ? `; parents: ${r.parents.map((p) => `${p.id}${p.role ? ` (${p.role})` : ''}`).join(', ')}` : ''}`;
        b.addEventListener('click', () => this.onChoose(r.id));
        li.append(b);
        return li;
      }),
    );
    this.renderGraph(runs);
    this.renderTests();
  }

  private renderGraph(runs: RunPayload[]): void {
    if (!runs.length) {
      this.graph.textContent = 'No runs yet.';
      return;
    }
    const { nodes, edges, width, height } = layoutLineage(runs);
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('width', String(width));
    svg.setAttribute('height', String(height));
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', `Lineage of ${runs.length} runs`);
    for (const e of edges) {
      const path = document.createElementNS(SVG, 'polyline');
      path.setAttribute('points', e.points.map((p) => `${p.x},${p.y}`).join(' '));
      path.setAttribute('class', 'edge');
      svg.append(path);
    }
    for (const n of nodes) {
      const r = this.runs.get(n.id)!;
      const g = document.createElementNS(SVG, 'g');
      g.setAttribute('class', `node${n.id === this.selected ? ' selected' : ''}`);
      g.setAttribute('tabindex', '0');
      g.setAttribute('role', 'button');
      g.setAttribute('aria-label', `run ${r.name}`);
      g.dataset.run = n.id;
      const rect = document.createElementNS(SVG, 'rect');
      rect.setAttribute('x', String(n.x - n.width / 2));
      rect.setAttribute('y', String(n.y - n.height / 2));
      rect.setAttribute('width', String(n.width));
      rect.setAttribute('height', String(n.height));
      rect.setAttribute('rx', '5');
      const text = document.createElementNS(SVG, 'text');
      text.setAttribute('x', String(n.x));
      text.setAttribute('y', String(n.y + 4));
      text.setAttribute('text-anchor', 'middle');
      text.textContent = r.name;
      g.append(rect, text);
      g.addEventListener('click', () => this.onChoose(n.id));
      g.addEventListener('keydown', (e) => (e.key === 'Enter' || e.key === ' ') && this.onChoose(n.id));
      svg.append(g);
    }
    this.graph.replaceChildren(svg);
  }

  private renderTests(): void {
    const rows = this.tests.filter((t) => !this.selected || t.run === this.selected);
    const head = '<tr><th scope="col">run</th><th scope="col">split</th><th scope="col">step</th><th scope="col">epoch</th><th scope="col">loss</th><th scope="col">metrics</th></tr>';
    this.testList.innerHTML = `<thead>${head}</thead>`;
    const body = document.createElement('tbody');
    for (const t of rows) {
      const tr = document.createElement('tr');
      const metrics = Object.entries(t.metrics ?? {}).map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : String(v)}`).join(', ');
      for (const v of [this.runs.get(t.run)?.name ?? t.run, t.split, String(t.step), String(t.epoch), fmt(t.loss), metrics]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(td);
      }
      body.append(tr);
    }
    this.testList.append(body);
  }
}
