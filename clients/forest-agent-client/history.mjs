// Runs the Impersonation history action on users RECORD_ID through Forest's
// published agent client (its form hooks, then the action), against the
// service at IMPERSONATOR_URL with the Forest JWT FOREST_JWT, and prints
// what it got as one JSON line.
import { createRemoteAgentClient } from '@forestadmin/agent-client';

const client = createRemoteAgentClient({
  url: process.env.IMPERSONATOR_URL,
  token: process.env.FOREST_JWT,
  actionEndpoints: {
    users: {
      'Impersonation history': {
        name: 'Impersonation history',
        endpoint: process.env.ACTION_ENDPOINT,
      },
    },
  },
});

try {
  const action = await client.collection('users').action('Impersonation history', {
    recordId: process.env.RECORD_ID,
  });
  const result = await action.execute();
  console.log(JSON.stringify({ fields: action.getFields().length, result }));
} catch (error) {
  console.log(JSON.stringify({ error: String(error.message ?? error) }));
}
