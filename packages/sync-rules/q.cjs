const D=require('better-sqlite3');const d=new D(':memory:');d.defaultSafeIntegers(true);
for (const q of process.argv.slice(2)) { try { const r=d.prepare('select ('+q+') v, typeof('+q+') t').raw().get(); console.log(q,'=>',r) } catch(e) { console.log(q,'ERR', e.message) } }
